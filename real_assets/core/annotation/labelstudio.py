"""Label Studio over its HTTP API, with the standard library only.

Why not the `label-studio-sdk` package: it pins its own httpx/pydantic stack and follows the server's
releases, while this project needs eight endpoints; plain `urllib` keeps the project's environment as it is
and the errors under our control (the server runs in a venv of its own, see DESIGN.md).

Authentication: a personal access token (Label Studio 1.23's default; a JWT refresh token, exchanged for a
short-lived access token at `/api/token/refresh/`) or, where an organization enabled them, a legacy token
(`Authorization: Token ...`). The token never appears in an error message, a log line or metadata.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

PAIRWISE_CONFIG = """<View>
  <Header value="Which answer is better?"/>
  <Text name="prompt" value="$prompt"/>
  <Pairwise name="comparison" toName="left,right"/>
  <Text name="left" value="$left"/>
  <Text name="right" value="$right"/>
</View>"""
"""The labeling config: the prompt and two answers; the annotator picks one (a `pairwise` result whose
`value.selected` is `left` or `right`). Nothing else of the task is shown."""


class LabelStudioError(RuntimeError):
    """Label Studio answered with an error, or not at all."""


class LabelStudioUnreachable(LabelStudioError):
    """Nothing answers at the configured URL."""


class LabelStudioAuthError(LabelStudioError):
    """Label Studio refused the credentials (401/403)."""


class LabelStudioNotFound(LabelStudioError):
    """The project or task asked for does not exist (404)."""


def is_legacy_token(token: str) -> bool:
    """A legacy token is 40 hex characters; a personal access token is a JWT (three dot-separated parts)."""
    return token.count(".") != 2


@dataclass
class LabelStudioClient:
    """A Label Studio server at `url`, with a personal access token or legacy token `api_key`."""

    url: str
    api_key: str
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        self.url = self.url.rstrip("/")
        self._access: str | None = None

    def __repr__(self) -> str:  # the dataclass repr would print the token
        return f"LabelStudioClient(url={self.url!r})"

    # ------------------------------------------------------------------------------------------- transport

    def _send(self, method: str, path: str, body: Any = None, headers: dict | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json", "Accept": "application/json", **(headers or {})},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                text = response.read()
        except urllib.error.HTTPError as e:
            detail = e.read()[:300].decode("utf-8", "replace")
            where = f"Label Studio at {self.url}: {method} {path.split('?')[0]}"
            if e.code in (401, 403):
                raise LabelStudioAuthError(
                    f"{where} refused the credentials (HTTP {e.code}): check the API key "
                    "(a personal access token, or a legacy token where the organization allows them)"
                ) from None
            if e.code == 404:
                raise LabelStudioNotFound(f"{where} found nothing (HTTP 404)") from None
            raise LabelStudioError(f"{where} failed with HTTP {e.code}: {detail}") from None
        except (TimeoutError, urllib.error.URLError, ConnectionError) as e:
            reason = getattr(e, "reason", e)
            raise LabelStudioUnreachable(
                f"Label Studio at {self.url} does not answer ({reason}): is it running, is the URL right?"
            ) from None
        return json.loads(text) if text else None

    def _authorization(self) -> dict:
        if is_legacy_token(self.api_key):
            return {"Authorization": f"Token {self.api_key}"}
        if self._access is None:
            answer = self._send("POST", "/api/token/refresh/", {"refresh": self.api_key})
            self._access = answer["access"]
        return {"Authorization": f"Bearer {self._access}"}

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """One API call, authenticated; an expired access token is refreshed once."""
        try:
            return self._send(method, path, body, self._authorization())
        except LabelStudioAuthError:
            if is_legacy_token(self.api_key) or self._access is None:
                raise
            self._access = None  # access tokens live minutes: refresh and try once more
            return self._send(method, path, body, self._authorization())

    # ------------------------------------------------------------------------------------------- projects

    def find_project(self, title: str) -> dict | None:
        """The project with exactly this title, if any."""
        page = 1
        while True:
            answer = self.request("GET", f"/api/projects/?page={page}&page_size=100")
            projects = answer["results"] if isinstance(answer, dict) else answer
            for project in projects:
                if project.get("title") == title:
                    return project
            if not isinstance(answer, dict) or not answer.get("next"):
                return None
            page += 1

    def ensure_project(self, title: str, label_config: str, overlap: float) -> tuple[int, bool]:
        """(id, created) of the project with this title: created with the pairwise config, or reused; its
        overlap set so that a share `overlap` of tasks is labelled by two annotators."""
        settings = {
            "maximum_annotations": 2 if overlap > 0 else 1,
            "overlap_cohort_percentage": round(100 * overlap),
            "show_skip_button": True,
        }
        found = self.find_project(title)
        if found is None:
            created = self.request(
                "POST", "/api/projects/", {"title": title, "label_config": label_config, **settings}
            )
            return int(created["id"]), True
        if found.get("label_config", "").strip() != label_config.strip():
            raise LabelStudioError(
                f"Label Studio project {title!r} (id {found['id']}) at {self.url} has another labeling "
                "config: it was not made for pairwise annotation requests; choose another project title"
            )
        self.request("PATCH", f"/api/projects/{found['id']}/", settings)
        return int(found["id"]), False

    def import_tasks(self, project_id: int, tasks: list[dict]) -> list[int]:
        """Import tasks; returns their ids in the order given."""
        if not tasks:
            return []
        answer = self.request("POST", f"/api/projects/{project_id}/import?return_task_ids=true", tasks)
        ids = answer.get("task_ids") or []
        if len(ids) != len(tasks):
            raise LabelStudioError(
                f"Label Studio at {self.url} imported {answer.get('task_count')} of {len(tasks)} tasks"
            )
        return [int(i) for i in ids]

    def export(self, project_id: int) -> list[dict]:
        """Every task of the project with its annotations, in Label Studio's JSON export format."""
        query = urllib.parse.urlencode({"exportType": "JSON", "download_all_tasks": "true"})
        return self.request("GET", f"/api/projects/{project_id}/export?{query}")
