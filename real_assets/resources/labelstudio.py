"""Label Studio as a resource: the server annotators work in, its URL and key from config or the
environment; the key never reaches logs, metadata or MLflow."""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from real_assets.core.annotation.labelstudio import LabelStudioClient, LabelStudioError

LABEL_STUDIO_URL_ENV = "LABEL_STUDIO_URL"
LABEL_STUDIO_KEY_ENV = "LABEL_STUDIO_API_KEY"


class LabelStudio(dg.ConfigurableResource):
    """The Label Studio server annotators work in. `url` and `api_key` (a personal access token, or a legacy
    token where the organization enables them) come from this config, best as `dg.EnvVar`, else from
    $LABEL_STUDIO_URL and $LABEL_STUDIO_API_KEY; the key never reaches logs, metadata or MLflow."""

    url: str = ""
    api_key: str = Field("", repr=False)
    project_title: str = "real-assets pairwise preferences"
    timeout_s: float = 30.0

    def base_url(self) -> str:
        import os

        return (self.url or os.environ.get(LABEL_STUDIO_URL_ENV, "")).rstrip("/")

    def client(self) -> LabelStudioClient:
        """A client for the configured server; LabelStudioError when URL or key is missing."""
        import os

        url, key = self.base_url(), self.api_key or os.environ.get(LABEL_STUDIO_KEY_ENV, "")
        if not url or not key:
            raise LabelStudioError(
                f"Label Studio is not configured: set the label_studio resource's url and api_key, or "
                f"${LABEL_STUDIO_URL_ENV} and ${LABEL_STUDIO_KEY_ENV}"
            )
        return LabelStudioClient(url, key, self.timeout_s)
