"""A fake Kaggle API on loopback for tests: the real `kaggle` client reaches it as an HTTP proxy
(KAGGLE_API_ENVIRONMENT=LOCALHOST, docs/kaggle.md). Records every request; refuses CONNECT,
which is what any attempt to reach the real https://api.kaggle.com would be."""

from __future__ import annotations

import hashlib
import io
import json
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


class FakeKaggle:
    def __init__(self):
        self.requests: list[dict] = []
        self.uploads: dict[str, bytes] = {}
        self.fail: dict[str, list[int]] = {}      # RPC or path → statuses to answer first, one per call
        self.files: dict[str, bytes] = {}          # download name → zip bytes
        self.submissions: list[dict] = []
        self.score_after_polls = 1                 # ListSubmissions calls before a new submission is COMPLETE
        self.broken_upload = False
        self.datasets: set[str] = set()
        self.kernel_versions = 0
        self.blob_names: dict[str, str] = {}       # upload token → file name (a dataset's files)
        self.dataset_pending_polls = 0             # GetDatasetStatus answers "pending" this many times first
        self.invalid_sources: dict[str, list] = {}  # SaveKernel answers these invalid…Sources
        self.failure_message = ""
        # the pushed notebook "runs" here, in a thread: the dataset's files {name: bytes} → (final status,
        # output files {name: bytes}, log text). RUNNING is answered until it returns.
        self.notebook = lambda files: ("COMPLETE", {}, "")
        self.run: threading.Thread | None = None
        self.kernel_status = "QUEUED"
        self.output: dict[str, bytes] = {}
        self.log = ""
        self.leaderboard: list[float] = []         # the public board
        self.private_leaderboard: list[float] = []  # answered unless the request asks for the public one
        self.cut_download_after: int | None = None  # the first download sends this many bytes, then drops
        self.hang = threading.Event()               # ...and stalls until this is set (a killed kt)
        self.limits: dict | None = None            # GetSubmissionLimits answer (None: 404, an older server)
        self.scored = {"status": "COMPLETE", "publicScore": "0.91234", "privateScore": ""}  # what scoring gives
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    @property
    def rpcs(self) -> list[str]:
        return [r["rpc"] for r in self.requests if r.get("rpc")]

    def env(self, home: str) -> dict[str, str]:
        proxy = f"http://127.0.0.1:{self.port}"
        env = {"KAGGLE_API_ENVIRONMENT": "LOCALHOST", "HOME": home, "KAGGLE_CONFIG_DIR": f"{home}/.kaggle",
               "KAGGLE_USERNAME": "kt-tester", "KAGGLE_KEY": "s3cret-key-do-not-print", "NO_PROXY": "",
               "no_proxy": ""}
        for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
            env[name] = env[name.lower()] = proxy
        return env

    @staticmethod
    def zip_of(files: dict[str, bytes]) -> bytes:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for name, data in files.items():
                zf.writestr(name, data)
        return buf.getvalue()

    # -- answers ------------------------------------------------------------------------------------
    def answer(self, rpc: str, body: dict) -> tuple[int, dict | None, dict]:
        if rpc == "DownloadDataFiles":
            name = f"{body.get('competitionName')}.zip"
            return 302, None, {"Location": f"http://localhost/files/{name}"}
        if rpc == "StartSubmissionUpload":
            token = hashlib.sha1(body["fileName"].encode()).hexdigest()[:8]
            return 200, {"token": token, "createUrl": f"http://localhost/upload/{token}"}, {}
        if rpc == "CreateSubmission":
            ref = 1000 + len(self.submissions)
            self.submissions.append({"ref": ref, "fileName": "submission.csv", "date": _now(),
                                     "description": body.get("submissionDescription", ""), "status": "PENDING",
                                     "polls": 0})
            return 200, {"message": "Successfully submitted", "ref": ref}, {}
        if rpc == "GetDatasetStatus":
            ref = f"{body.get('ownerSlug')}/{body.get('datasetSlug')}"
            if ref not in self.datasets:
                return 404, {"code": 404, "message": "dataset not found"}, {}
            if self.dataset_pending_polls > 0:
                self.dataset_pending_polls -= 1
                return 200, {"status": "BLOBS_RECEIVED"}, {}
            return 200, {"status": "READY"}, {}
        if rpc == "StartBlobUpload":
            token = hashlib.sha1((body.get("name", "") + str(len(self.blob_names))).encode()).hexdigest()[:10]
            self.blob_names[token] = body.get("name", "")
            return 200, {"token": token, "createUrl": f"http://localhost/upload/{token}"}, {}
        if rpc in ("CreateDataset", "CreateDatasetVersion"):
            ref = f"{body.get('ownerSlug')}/{body.get('slug') or body.get('datasetSlug')}"
            self.datasets.add(ref)
            return 200, {"ref": ref, "url": f"http://localhost/datasets/{ref}", "status": "Ok", "error": ""}, {}
        if rpc == "SaveKernel":
            self.kernel_versions += 1
            files = {self.blob_names[t]: d for t, d in self.uploads.items() if t in self.blob_names}
            self.kernel_status, self.output, self.log = "RUNNING", {}, ""

            def run():
                self.kernel_status, self.output, self.log = self.notebook(files)

            self.run = threading.Thread(target=run, daemon=True)
            self.run.start()
            return 200, {"ref": f"/code/{body.get('slug')}", "url": "http://localhost/code",
                         "versionNumber": self.kernel_versions, "error": "",
                         **{f"invalid{k.title()}Sources": v for k, v in self.invalid_sources.items()}}, {}
        if rpc == "GetKernelSessionStatus":
            status = self.kernel_status
            return 200, {"status": status, "failureMessage": self.failure_message if status == "ERROR" else ""}, {}
        if rpc == "ListKernelSessionOutput":
            files = [{"fileName": n, "url": f"http://localhost/files/out-{n}"} for n in self.output]
            for n, data in self.output.items():
                self.files[f"out-{n}"] = data
            return 200, {"files": files, "log": self.log, "nextPageToken": ""}, {}
        if rpc == "GetSubmissionLimits":
            if self.limits is None:
                return 404, {"code": 404, "message": "no such method"}, {}
            return 200, self.limits, {}
        if rpc == "GetLeaderboard":
            # as Kaggle does for a finished competition: the private board unless overridePublic is set
            board = self.leaderboard if body.get("overridePublic") else self.private_leaderboard
            page, size = int(body.get("pageToken") or 0), int(body.get("pageSize") or 20)
            rows = [{"teamId": i, "teamName": f"team {i}", "score": f"{v:.5f}"}
                    for i, v in enumerate(board[page * size:(page + 1) * size], start=page * size)]
            more = (page + 1) * size < len(board)
            return 200, {"submissions": rows, "nextPageToken": str(page + 1) if more else ""}, {}
        if rpc == "CreateCodeSubmission":
            ref = 2000 + len(self.submissions)
            self.submissions.append({"ref": ref, "fileName": body.get("fileName", ""), "date": _now(),
                                     "description": body.get("submissionDescription", ""), "status": "PENDING",
                                     "polls": 0})
            return 200, {"message": "Successfully submitted", "ref": ref}, {}
        if rpc == "ListSubmissions":
            for s in self.submissions:
                s["polls"] += 1
                if s["status"] == "PENDING" and s["polls"] > self.score_after_polls:
                    s.update(self.scored)
            subs = [{k: v for k, v in s.items() if k != "polls"} for s in reversed(self.submissions)]
            page, size = int(body.get("pageToken") or 0), int(body.get("pageSize") or 20)
            more = (page + 1) * size < len(subs)
            return 200, {"submissions": subs[page * size:(page + 1) * size],
                         "nextPageToken": str(page + 1) if more else ""}, {}
        return 404, {"code": 404, "message": f"no fake for {rpc}"}, {}

    def _handler(self):
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _record(self, **extra) -> dict:
                auth = self.headers.get("Authorization", "")
                entry = {"method": self.command, "path": urlsplit(self.path).path,
                         "auth": auth.split(" ")[0] if auth else None, **extra}
                fake.requests.append(entry)
                return entry

            def _send(self, status: int, payload: dict | bytes | None = None, headers: dict | None = None):
                data = payload if isinstance(payload, bytes) else json.dumps(payload or {}).encode()
                self.send_response(status)
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                if not isinstance(payload, bytes):
                    self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(data)

            def _failure(self, key: str) -> bool:
                queue = fake.fail.get(key)
                if queue:
                    status = queue.pop(0)
                    self._send(status, {"code": status, "message": f"fake failure {status}"})
                    return True
                return False

            def do_CONNECT(self):
                self._record(rpc=None, refused=True)
                self._send(403, {"code": 403, "message": "the fake refuses CONNECT"})

            def do_POST(self):
                path = urlsplit(self.path).path
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                rpc = path.rsplit("/", 1)[-1]
                self._record(rpc=rpc, body=body)
                if not self._failure(rpc):
                    self._send(*fake.answer(rpc, body))

            def do_PUT(self):
                path = urlsplit(self.path).path
                data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                self._record(rpc=None, sha256=hashlib.sha256(data).hexdigest(), size=len(data))
                if fake.broken_upload:
                    self._send(500, {"code": 500, "message": "upload broke"})
                    return
                fake.uploads[path.rsplit("/", 1)[-1]] = data
                self._send(200, {})

            def do_GET(self):
                path = urlsplit(self.path).path
                self._record(rpc=None)
                name = path.rsplit("/", 1)[-1]
                if self._failure(name):
                    return
                if name not in fake.files:
                    self._send(404, {"code": 404, "message": "no such file"})
                    return
                data = fake.files[name]
                headers = {"Content-Type": "application/zip", "Last-Modified": "Sat, 28 Nov 2026 10:00:00 GMT",
                           "Accept-Ranges": "bytes", "ETag": '"' + hashlib.sha1(data).hexdigest() + '"'}
                fake.requests[-1]["range"] = self.headers.get("Range")
                ranged = self.headers.get("Range", "").removeprefix("bytes=").split("-")[0]
                if ranged.isdigit():  # a resumed download: the rest, from that byte
                    start = int(ranged)
                    self.send_response(206)
                    for k, v in {**headers, "Content-Range": f"bytes {start}-{len(data) - 1}/{len(data)}",
                                 "Content-Length": str(len(data) - start)}.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data[start:])
                    return
                if fake.cut_download_after is not None:  # send a part, then stall: the client is killed
                    cut, fake.cut_download_after = fake.cut_download_after, None
                    self.send_response(200)
                    for k, v in {**headers, "Content-Length": str(len(data))}.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data[:cut])
                    self.wfile.flush()
                    fake.hang.wait(60)
                    return
                self._send(200, data, headers)

        return Handler


def _now() -> str:
    import time

    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())
