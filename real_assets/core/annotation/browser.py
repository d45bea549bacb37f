"""An annotator's browser session in Label Studio: sign up or log in with the web forms, then call the API
with the session cookie and CSRF token, as the labeling view does. The simulated annotators answer through
it, and an administrator's session creates the personal access token the pipeline uses."""

from __future__ import annotations

import http.cookiejar
import json
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from real_assets.core.annotation.labelstudio import LabelStudioAuthError, LabelStudioClient, LabelStudioError


class LabelStudioBrowser(LabelStudioClient):
    """A logged-in web session (cookie and CSRF token), not an API token."""

    def __init__(self, url: str, timeout_s: float = 30.0) -> None:
        super().__init__(url, api_key="", timeout_s=timeout_s)
        self._jar = http.cookiejar.CookieJar()
        self._opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(self._jar))

    def _csrf(self) -> str:
        return next((c.value for c in self._jar if c.name == "csrftoken"), "")

    def _form(self, path: str, fields: dict[str, str]) -> str:
        self._opener.open(self.url + path, timeout=self.timeout_s)  # the page sets the CSRF cookie
        data = urllib.parse.urlencode({**fields, "csrfmiddlewaretoken": self._csrf()}).encode()
        request = urllib.request.Request(self.url + path, data=data, headers={"Referer": self.url + path})
        with self._opener.open(request, timeout=self.timeout_s) as response:
            return response.url

    def sign_up(self, email: str, password: str) -> LabelStudioBrowser:
        """Create an account with the sign-up form (Label Studio's default: open sign-up); stay logged in."""
        self._form("/user/signup/", {"email": email, "password": password})
        self.user_id()  # fails with LabelStudioAuthError when the sign-up did not log in
        return self

    def log_in(self, email: str, password: str) -> LabelStudioBrowser:
        """Log in with the login form."""
        self._form("/user/login/", {"email": email, "password": password})
        self.user_id()
        return self

    def request(self, method: str, path: str, body: Any = None) -> Any:
        headers = {"X-CSRFToken": self._csrf(), "Referer": self.url + "/"}
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={"Content-Type": "application/json", "Accept": "application/json", **headers},
        )
        try:
            with self._opener.open(request, timeout=self.timeout_s) as response:
                text = response.read()
        except urllib.error.HTTPError as e:
            if e.code in (401, 403):
                raise LabelStudioAuthError(f"{self.url}{path}: not logged in (HTTP {e.code})") from None
            raise LabelStudioError(f"{self.url}{path}: HTTP {e.code}: {e.read()[:300]!r}") from None
        return json.loads(text) if text else None

    def user_id(self) -> int:
        return int(self.request("GET", "/api/current-user/whoami")["id"])

    def personal_access_token(self) -> str:
        """A new personal access token of this user (what Account & Settings shows once)."""
        return self.request("POST", "/api/token/", {})["token"]

    def tasks(self, project_id: int) -> list[dict]:
        """Every task of a project (id, data, overlap, annotations so far)."""
        out, page = [], 1
        while True:
            answer = self.request(
                "GET", f"/api/tasks?project={project_id}&fields=all&page={page}&page_size=100"
            )
            out += answer["tasks"]
            if len(out) >= answer["total"] or not answer["tasks"]:
                return out
            page += 1

    def submit(self, task_id: int, result: list[dict], lead_time: float) -> dict:
        """Submit an annotation as the labeling view does."""
        return self.request(
            "POST", f"/api/tasks/{task_id}/annotations/", {"result": result, "lead_time": lead_time}
        )

    def update(self, annotation_id: int, result: list[dict]) -> dict:
        """Change a submitted annotation."""
        return self.request("PATCH", f"/api/annotations/{annotation_id}/", {"result": result})

    def delete_task(self, task_id: int) -> None:
        self.request("DELETE", f"/api/tasks/{task_id}/")
