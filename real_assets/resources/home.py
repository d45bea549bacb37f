"""The home folder as a resource: where checkpoints, converted base models and reports are written."""

from __future__ import annotations

from pathlib import Path

import dagster as dg


class Home(dg.ConfigurableResource):
    """The home folder (`Locations.home`: `--home`, `$REAL_ASSETS_HOME`, else `./.real_assets`). Every
    path under it is created on first use."""

    path: str
    inbox_path: str = ""
    """The folder the inbox sensor watches; empty means `<home>/inbox`."""

    def folder(self, *parts: str) -> Path:
        """A folder under the home, created."""
        folder = Path(self.path).joinpath(*parts)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    @property
    def root(self) -> Path:
        return self.folder()

    @property
    def checkpoints(self) -> Path:
        """Content-addressed checkpoint folders, `<asset>/<partition>/<data_version>/`."""
        return self.folder("checkpoints")

    @property
    def models(self) -> Path:
        """Base models converted once (a packaged GGUF as safetensors), shared by every checkpoint."""
        return self.folder("models")

    @property
    def reports(self) -> Path:
        return self.folder("reports")

    @property
    def inbox(self) -> Path:
        if self.inbox_path:
            folder = Path(self.inbox_path)
            folder.mkdir(parents=True, exist_ok=True)
            return folder
        return self.folder("inbox")
