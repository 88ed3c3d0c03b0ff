"""A local stand-in for the Hugging Face Hub's HTTP API: the requests ``gsae push`` makes.

huggingface_hub 2.4 (``HfApi.create_repo``, ``create_branch``, ``list_repo_files`` and
``create_commit``) calls

- ``POST /api/repos/create`` (JSON ``name``, ``organization``, ``visibility``): 200 with the
  repository's ``url``, 409 when it exists (``exist_ok`` accepts that);
- ``POST /api/{type}s/{repo}/branch/{branch}``: 200, 409 when it exists;
- ``POST /api/validate-yaml`` (JSON ``content``) for a committed README.md: the front matter
  must parse as YAML here;
- ``POST /api/{type}s/{repo}/preupload/{revision}`` (JSON ``files``: path, sample, size): every
  file is answered ``regular``, so its bytes travel base64 inside the commit (no LFS, no xet);
- ``POST /api/{type}s/{repo}/commit/{revision}``: an ndjson body, a ``header`` line (summary,
  description) and one ``file`` line per file (``content``, ``path``, ``encoding``);
- ``GET /api/{type}s/{repo}/tree/{revision}`` (``list_repo_files``, to describe the SAE folders
  an earlier push left on the branch): the branch's files, one page;

and to download (``hf_hub_download``: the card's ``cfg.json`` read-back, ``sae_lens.SAE.from_pretrained``)

- ``HEAD`` / ``GET /{repo}/resolve/{revision}/{path}``: the file with ``X-Repo-Commit`` and
  ``ETag`` headers, or 404 with ``X-Error-Code: EntryNotFound``.

The server keeps every repository's files per branch and every request; ``fail`` maps an
endpoint name (``create``, ``branch``, ``preupload``, ``commit``) to the HTTP status to answer
instead.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote, urlsplit

import yaml


@dataclass
class Request:
    """One request the stand-in answered."""

    endpoint: str
    path: str
    authorization: str | None
    body: bytes


@dataclass
class FakeHub:
    """The state behind the server: repositories, requests, injected failures."""

    url: str = ""
    repos: dict[str, dict[str, dict[str, bytes]]] = field(default_factory=dict)
    """repo id → branch → path → bytes."""
    created: list[dict[str, Any]] = field(default_factory=list)
    """The JSON payloads of the repositories created."""
    commits: list[dict[str, Any]] = field(default_factory=list)
    """The ``header`` value of every commit (``summary``, ``description``), with ``repo`` and ``revision``."""
    requests: list[Request] = field(default_factory=list)
    fail: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _front_matter(content: str) -> Any:
    if not content.startswith("---\n"):
        return {}
    return yaml.safe_load(content[4:].split("\n---\n", 1)[0])


def _tree_oid(files: dict[str, bytes]) -> str:
    """A 40-hex commit id for a branch's files (changes whenever they do)."""
    h = hashlib.sha1()
    for name in sorted(files):
        h.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return h.hexdigest()


class _Handler(BaseHTTPRequestHandler):
    hub: FakeHub

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Quiet: the test reads the recorded requests instead."""

    def _reply(self, status: int, payload: Any) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _tree(self, parts: list[str]) -> None:
        repo, revision = f"{parts[2]}/{parts[3]}", parts[5]
        with self.hub.lock:
            self.hub.requests.append(Request("tree", "/".join(parts), self.headers.get("Authorization"), b""))
            files = self.hub.repos.get(repo, {}).get(revision)
            listing = [
                {"type": "file", "path": name, "size": len(data), "oid": hashlib.sha1(data).hexdigest()}
                for name, data in sorted((files or {}).items())
            ]
        if files is None:
            self._reply(404, {"error": "Repository or revision not found"})
        else:
            self._reply(200, listing)

    def _file(self, head: bool) -> None:
        parts = unquote(urlsplit(self.path).path).strip("/").split("/")
        if len(parts) >= 6 and parts[0] == "api" and parts[4] == "tree":
            self._tree(parts)
            return
        with self.hub.lock:
            self.hub.requests.append(
                Request("download", "/".join(parts), self.headers.get("Authorization"), b"")
            )
        if len(parts) < 5 or parts[2] != "resolve":
            self._reply(404, {"error": "not a file URL"})
            return
        repo, revision, name = f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:])
        with self.hub.lock:
            files = self.hub.repos.get(repo, {}).get(revision)
            data = None if files is None else files.get(name)
            commit = "" if files is None else _tree_oid(files)
        if data is None:
            body = b'{"error": "Entry not found"}'
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound" if files is not None else "RepoNotFound")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)
            return
        self.send_response(200)
        self.send_header("X-Repo-Commit", commit)
        self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self._file(head=True)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._file(head=False)

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        path = unquote(urlsplit(self.path).path)
        parts = path.strip("/").split("/")
        if path == "/api/repos/create":
            endpoint = "create"
        elif path == "/api/validate-yaml":
            endpoint = "validate"
        elif len(parts) >= 6 and parts[0] == "api" and parts[4] in ("branch", "preupload", "commit"):
            endpoint = parts[4]
        else:
            self._reply(404, {"error": f"the stand-in does not serve {path}"})
            return
        with self.hub.lock:
            self.hub.requests.append(Request(endpoint, path, self.headers.get("Authorization"), body))
            status = self.hub.fail.get(endpoint)
        if status is not None:
            self._reply(status, {"error": f"injected failure of {endpoint}"})
            return
        getattr(self, f"_{endpoint}")(parts, body)

    def _create(self, parts: list[str], body: bytes) -> None:
        payload = json.loads(body)
        repo = f"{payload['organization'] or 'me'}/{payload['name']}"
        with self.hub.lock:
            if repo in self.hub.repos:
                self._reply(
                    409, {"error": "You already created this model repo", "url": f"{self.hub.url}/{repo}"}
                )
                return
            self.hub.repos[repo] = {"main": {".gitattributes": b"*.safetensors filter=lfs\n"}}
            self.hub.created.append(payload)
        self._reply(200, {"url": f"{self.hub.url}/{repo}"})

    def _validate(self, parts: list[str], body: bytes) -> None:
        try:
            meta = _front_matter(json.loads(body)["content"])
        except yaml.YAMLError as exc:
            self._reply(400, {"errors": [{"message": f"invalid YAML: {exc}"}]})
            return
        ok = isinstance(meta, dict)
        self._reply(200 if ok else 400, {"errors": [] if ok else [{"message": "metadata is not a mapping"}]})

    def _repo(self, parts: list[str]) -> tuple[str, str]:
        return f"{parts[2]}/{parts[3]}", "/".join(parts[5:])

    def _branch(self, parts: list[str], body: bytes) -> None:
        repo, branch = self._repo(parts)
        with self.hub.lock:
            branches = self.hub.repos.get(repo)
            if branches is None:
                self._reply(404, {"error": "Repository not found"})
            elif branch in branches:
                self._reply(409, {"error": "Reference already exists"})
            else:
                branches[branch] = dict(branches["main"])
                self._reply(200, {})

    def _preupload(self, parts: list[str], body: bytes) -> None:
        files = json.loads(body)["files"]
        self._reply(
            200,
            {
                "files": [
                    {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None}
                    for f in files
                ]
            },
        )

    def _commit(self, parts: list[str], body: bytes) -> None:
        repo, revision = self._repo(parts)
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        with self.hub.lock:
            branches = self.hub.repos.get(repo)
            if branches is None or revision not in branches:
                self._reply(404, {"error": f"Revision Not Found for url: {revision}"})
                return
            for line in lines:
                if line["key"] == "header":
                    self.hub.commits.append({**line["value"], "repo": repo, "revision": revision})
                elif line["key"] == "file" and line["value"]["encoding"] == "base64":
                    branches[revision][line["value"]["path"]] = base64.b64decode(line["value"]["content"])
                else:
                    self._reply(422, {"error": f"the stand-in does not take {line['key']} lines"})
                    return
            oid = hashlib.sha1(body).hexdigest()
        self._reply(200, {"commitUrl": f"{self.hub.url}/{repo}/commit/{oid}", "commitOid": oid})


@contextmanager
def serve_hub() -> Iterator[FakeHub]:
    """A running stand-in on a free local port (``hub.url``), stopped on exit."""
    hub = FakeHub()
    handler = type("Handler", (_Handler,), {"hub": hub})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
        thread.join()
