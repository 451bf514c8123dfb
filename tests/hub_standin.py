"""A STAND-IN for the Hugging Face Hub, for offline tests only. It is not the Hub.

It serves, on 127.0.0.1 only, just the endpoints huggingface_hub 2.4 calls for nyxmed's publish and
Hub registry (read from its source: hf_api.py, _commit_api.py):

- POST   /api/repos/create                          create_repo (409 when it exists)
- GET    /api/models/{repo}/revision/{rev}          model_info / repo_info (?blobs=true: size, blobId)
- GET    /api/models/{repo}/refs                    list_repo_refs
- POST   /api/models/{repo}/preupload/{rev}         upload modes: every file "regular" (no LFS, no Xet)
- POST   /api/models/{repo}/commit/{rev}            create_commit: ndjson header / file / deletedFile;
                                                     parentCommit checked: 412 when stale, as the Hub
                                                     answers (huggingface_hub raises HfHubHTTPError with
                                                     response.status_code 412; nyxmed also retries 409)
- POST   /api/models/{repo}/tag/{rev}               create_tag;  DELETE /api/models/{repo}/tag/{tag}
- POST   /api/models/{repo}/branch/{branch}         create_branch; DELETE .../branch/{branch}
- GET    /{repo}/resolve/{rev}/{path}               file download
- POST   /api/validate-yaml                         README.md metadata check (accepts any)

State lives in memory. Write requests without ``Authorization: Bearer ...`` get 401; every token
seen is recorded in ``tokens`` so tests can check the client really sent one.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse


def git_oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit sha -> files
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)

    def resolve(self, rev: str) -> str | None:
        rev = unquote(rev)
        for prefix in ("refs/heads/", "refs/tags/"):
            rev = rev.removeprefix(prefix)
        if rev in self.branches:
            return self.branches[rev]
        if rev in self.tags:
            return self.tags[rev]
        matches = [c for c in self.commits if c.startswith(rev)] if len(rev) >= 7 else []
        return matches[0] if len(matches) == 1 else None

    def commit(self, files: dict[str, bytes], message: str, parent: str | None) -> str:
        sha = hashlib.sha1(json.dumps([parent, message, sorted((k, git_oid(v)) for k, v in files.items()),
                                       len(self.commits)]).encode()).hexdigest()
        self.commits[sha] = files
        return sha


class HubStandin:
    """Start with ``with HubStandin() as hub:``; ``hub.endpoint`` is its URL."""

    def __init__(self):
        self.repos: dict[str, Repo] = {}
        self.tokens: set[str] = set()
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        self.fail_next: dict[str, int] = {}  # (method path regex) -> HTTP status, to simulate Hub errors
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "HubStandin":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def files(self, repo_id: str, rev: str) -> dict[str, bytes]:
        repo = self.repos[repo_id]
        return repo.commits[repo.resolve(rev)]

    # ------------------------------------------------------------------ request handling
    def _handler(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # quiet
                pass

            def _send(self, status: int, body=None, headers: dict | None = None, raw: bytes | None = None):
                data = raw if raw is not None else json.dumps(body if body is not None else {}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/octet-stream" if raw is not None else "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                if status >= 400:
                    self.send_header("X-Error-Message", (body or {}).get("error", "error"))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _body(self) -> bytes:
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _auth(self) -> bool:
                value = self.headers.get("Authorization", "")
                if value.startswith("Bearer "):
                    hub.tokens.add(value[7:])
                    return True
                return False

            def do_GET(self):
                self._route("GET")

            def do_HEAD(self):
                self._route("GET")

            def do_POST(self):
                self._route("POST")

            def do_DELETE(self):
                self._route("DELETE")

            def _route(self, method: str):
                path = urlparse(self.path).path
                hub.requests.append((method, path))
                authed = self._auth()
                for pattern, status in list(hub.fail_next.items()):
                    if re.fullmatch(pattern, f"{method} {path}"):
                        del hub.fail_next[pattern]
                        return self._send(status, {"error": "simulated Hub failure"})
                if method != "GET" and not authed:
                    return self._send(401, {"error": "Invalid credentials in Authorization header"})
                with hub.lock:
                    for pat, fn in ROUTES:
                        m = re.fullmatch(pat, f"{method} {path}")
                        if m:
                            return fn(self, **{k: unquote(v) for k, v in m.groupdict().items()})
                return self._send(404, {"error": f"stand-in does not serve {method} {path}"})

            # ---------------------------------------------------------- endpoints
            def create_repo(self):
                payload = json.loads(self._body())
                repo_id = f"{payload.get('organization') or 'user'}/{payload['name']}"
                if repo_id in hub.repos:
                    # like the Hub, the conflict answer carries the repo's URL (create_repo(exist_ok=True) reads it)
                    return self._send(409, {"error": "You already created this model repo",
                                            "url": f"{hub.endpoint}/{repo_id}"})
                repo = hub.repos[repo_id] = Repo()
                repo.branches["main"] = repo.commit({".gitattributes": b"*.safetensors filter=lfs\n"},
                                                    "initial commit", None)
                return self._send(200, {"url": f"{hub.endpoint}/{repo_id}", "name": repo_id})

            def _repo(self, repo: str) -> Repo | None:
                if repo not in hub.repos:
                    self._send(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
                    return None
                return hub.repos[repo]

            def model_info(self, repo: str, rev: str = "main"):
                r = self._repo(repo)
                if r is None:
                    return
                sha = r.resolve(rev)
                if sha is None:
                    return self._send(404, {"error": f"Invalid rev id: {rev}"}, {"X-Error-Code": "RevisionNotFound"})
                siblings = [{"rfilename": k, "size": len(v), "blobId": git_oid(v)} for k, v in
                            sorted(r.commits[sha].items())]
                return self._send(200, {"id": repo, "sha": sha, "private": True, "siblings": siblings})

            def refs(self, repo: str):
                r = self._repo(repo)
                if r is None:
                    return
                return self._send(200, {
                    "branches": [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": c} for b, c in r.branches.items()],
                    "tags": [{"name": t, "ref": f"refs/tags/{t}", "targetCommit": c} for t, c in r.tags.items()],
                    "converts": []})

            def preupload(self, repo: str, rev: str):
                r = self._repo(repo)
                if r is None:
                    return
                current = r.commits.get(r.resolve(rev) or "", {})
                files = json.loads(self._body())["files"]
                return self._send(200, {"files": [
                    {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                     "oid": git_oid(current[f["path"]]) if f["path"] in current else None} for f in files]})

            def commit(self, repo: str, rev: str):
                r = self._repo(repo)
                if r is None:
                    return
                lines = [json.loads(line) for line in self._body().splitlines() if line.strip()]
                header = next(x["value"] for x in lines if x["key"] == "header")
                branch = unquote(rev)
                head = r.branches.get(branch)
                if head is None:
                    return self._send(404, {"error": f"Invalid rev id: {rev}"}, {"X-Error-Code": "RevisionNotFound"})
                if header.get("parentCommit") and header["parentCommit"] != head:
                    return self._send(412, {"error": "A commit has happened since. Please refresh and try again."})
                files = dict(r.commits[head])
                for x in lines:
                    if x["key"] == "file":
                        files[x["value"]["path"]] = base64.b64decode(x["value"]["content"])
                    elif x["key"] == "deletedFile":
                        files.pop(x["value"]["path"], None)
                    elif x["key"] == "deletedFolder":
                        files = {k: v for k, v in files.items() if not k.startswith(x["value"]["path"].rstrip("/") + "/")}
                    elif x["key"] != "header":
                        return self._send(400, {"error": f"stand-in does not support {x['key']} (LFS/Xet)"})
                sha = r.commit(files, header["summary"], head)
                r.branches[branch] = sha
                return self._send(200, {"commitUrl": f"{hub.endpoint}/{repo}/commit/{sha}", "commitOid": sha,
                                        "success": True})

            def create_tag(self, repo: str, rev: str):
                r = self._repo(repo)
                if r is None:
                    return
                tag = json.loads(self._body())["tag"]
                if tag in r.tags:
                    return self._send(409, {"error": f"Tag {tag} already exists"})
                sha = r.resolve(rev)
                if sha is None:
                    return self._send(404, {"error": f"Invalid rev id: {rev}"}, {"X-Error-Code": "RevisionNotFound"})
                r.tags[tag] = sha
                return self._send(200, {})

            def delete_tag(self, repo: str, name: str):
                r = self._repo(repo)
                if r is not None:
                    if r.tags.pop(name, None) is None:
                        return self._send(404, {"error": f"Tag {name} not found"})
                    return self._send(200, {})

            def create_branch(self, repo: str, name: str):
                r = self._repo(repo)
                if r is None:
                    return
                if name in r.branches:
                    return self._send(409, {"error": f"Branch {name} already exists"})
                start = json.loads(self._body() or b"{}").get("startingPoint", "main")
                sha = r.resolve(start)
                if sha is None:
                    return self._send(404, {"error": f"Invalid rev id: {start}"}, {"X-Error-Code": "RevisionNotFound"})
                r.branches[name] = sha
                return self._send(200, {})

            def delete_branch(self, repo: str, name: str):
                r = self._repo(repo)
                if r is not None:
                    if name == "main" or r.branches.pop(name, None) is None:
                        return self._send(403 if name == "main" else 404, {"error": f"cannot delete branch {name}"})
                    return self._send(200, {})

            def resolve_file(self, repo: str, rev: str, file: str):
                r = self._repo(repo)
                if r is None:
                    return
                sha = r.resolve(rev)
                if sha is None or file not in r.commits[sha]:
                    return self._send(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
                data = r.commits[sha][file]
                return self._send(200, raw=data, headers={"X-Repo-Commit": sha, "ETag": f'"{git_oid(data)}"'})

            def validate_yaml(self):
                self._body()
                return self._send(200, {"errors": [], "warnings": []})

        repo = r"(?P<repo>[^/]+/[^/]+)"
        ROUTES = [
            (r"POST /api/repos/create", Handler.create_repo),
            (rf"GET /api/models/{repo}/revision/(?P<rev>.+)", Handler.model_info),
            (rf"GET /api/models/{repo}", Handler.model_info),
            (rf"GET /api/models/{repo}/refs", Handler.refs),
            (rf"POST /api/models/{repo}/preupload/(?P<rev>.+)", Handler.preupload),
            (rf"POST /api/models/{repo}/commit/(?P<rev>.+)", Handler.commit),
            (rf"POST /api/models/{repo}/tag/(?P<rev>.+)", Handler.create_tag),
            (rf"DELETE /api/models/{repo}/tag/(?P<name>.+)", Handler.delete_tag),
            (rf"POST /api/models/{repo}/branch/(?P<name>.+)", Handler.create_branch),
            (rf"DELETE /api/models/{repo}/branch/(?P<name>.+)", Handler.delete_branch),
            (rf"GET /{repo}/resolve/(?P<rev>[^/]+)/(?P<file>.+)", Handler.resolve_file),
            (r"POST /api/validate-yaml", Handler.validate_yaml),
        ]
        return Handler
