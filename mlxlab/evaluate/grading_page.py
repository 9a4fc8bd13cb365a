"""The grading page: several graders grade an evaluation folder's answers blind in a browser, at once.

`mlxlab eval grade --web` serves it with FastAPI and uvicorn, the web stack llama-cpp-python[server] already
installs (imported only here, only when the page is served). It writes the same `grades.jsonl` as the terminal
grader (`mlxlab.evaluate.grading`), so either continues the other's work. A grader's session holds that grader's
lock until the page is closed (or idle for `IDLE_S`), so the same name from two pages or a terminal is refused.
"""

# no `from __future__ import annotations`: FastAPI reads the handlers' annotations (Request) at run time

import secrets
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from mlxlab.errors import MlxlabError
from mlxlab.evaluate.evaluation import read_results, write_summary
from mlxlab.evaluate.grading import (GRADES, GraderLock, append_grade, blind_order, grader_name, prompt_texts,
                                     read_grades)

IDLE_S = 90.0          # a page that stopped pinging (closed without saying so) frees its name after this long
PAGE = Path(__file__).parents[1] / "templates" / "grading_page.html"    # package data


class PageError(Exception):
    """A request the page can show and recover from: an HTTP status and one sentence."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class _Session:
    grader: str
    lock: GraderLock
    order: list[str]                                   # answer ids in this grader's blind order
    skipped: list[str] = field(default_factory=list)
    seen: float = field(default_factory=time.monotonic)


class GradingBoard:
    """The graders' sessions over one evaluation folder; every method is safe to call from several threads."""

    def __init__(self, output: str | Path, seed: int = 0):
        self.output = Path(output)
        self.rows = read_results(self.output)
        self.by_id = {r["id"]: r for r in self.rows}
        self.prompts = prompt_texts(self.output)
        self.grades_path = self.output / "grades.jsonl"
        self.seed = seed
        self._sessions: dict[str, _Session] = {}
        self._lock = threading.Lock()

    def start(self, name: object) -> dict:
        """Open a session for grader `name` (409 when that grader is grading elsewhere); its token and first answer."""
        try:
            grader = grader_name(name if isinstance(name, str) else None)
        except MlxlabError as err:
            raise PageError(400, err.message) from None
        with self._lock:
            self._expire()
            if any(s.grader == grader for s in self._sessions.values()):
                raise PageError(409, f"grader '{grader}' is already grading in another page; close it first "
                                     f"(or wait {IDLE_S:.0f} s after it was closed)")
            try:
                lock = GraderLock(self.output, grader).acquire()
            except MlxlabError as err:
                raise PageError(409, err.message) from None
            token = secrets.token_urlsafe(16)
            order = [r["id"] for r in blind_order(self.rows, grader, self.seed)]
            self._sessions[token] = _Session(grader, lock, order)
        return {"token": token, "grader": grader, **self.current(token)}

    def _session(self, token: object) -> _Session:
        with self._lock:
            found = self._sessions.get(token) if isinstance(token, str) else None
            if found is None:
                raise PageError(409, "this grading session has ended (closed, or idle too long): enter your name again")
            found.seen = time.monotonic()
            return found

    def current(self, token: object) -> dict:
        """The session's next answer to grade (prompt, reference, answer; never the model) and its progress."""
        session = self._session(token)
        mine = read_grades(self.grades_path).get(session.grader, {})
        todo = [a for a in session.order if a not in mine]
        ahead = [a for a in todo if a not in session.skipped] or todo    # skipped answers come back last
        progress = {"graded": len(self.rows) - len(todo), "total": len(self.rows), "left": len(todo)}
        if not ahead:
            return {**progress, "done": True, "answer": None}
        row = self.by_id[ahead[0]]
        question, reference = self.prompts.get(row["prompt"], ("", None))
        return {**progress, "done": False, "answer": {
            "id": row["id"], "prompt": row["prompt"], "question": question, "reference": reference,
            "text": row["answer"], "number": progress["graded"] + 1}}

    def grade(self, token: object, answer: object, value: object) -> dict:
        """Record `value` (0-5) for `answer` by the session's grader; the next answer."""
        session = self._session(token)
        if not isinstance(answer, str) or answer not in self.by_id:
            raise PageError(404, f"unknown answer id {answer!r}: not in {self.output / 'results.jsonl'}")
        if isinstance(value, bool) or not isinstance(value, int) or value not in GRADES:
            raise PageError(422, f"a grade is a whole number from 0 to 5, not {value!r}")
        append_grade(self.grades_path, answer, value, session.grader)
        with self._lock:
            if answer in session.skipped:
                session.skipped.remove(answer)
            write_summary(self.output, self.rows)          # summary.json/md follow every grade
        return self.current(token)

    def skip(self, token: object, answer: object) -> dict:
        """Put `answer` after the others for this session; the next answer."""
        session = self._session(token)
        if not isinstance(answer, str) or answer not in self.by_id:
            raise PageError(404, f"unknown answer id {answer!r}")
        with self._lock:
            if answer in session.skipped:
                session.skipped.remove(answer)
            session.skipped.append(answer)
        return self.current(token)

    def release(self, token: object) -> None:
        """End a session (the page was closed): its grader's name is free again."""
        with self._lock:
            found = self._sessions.pop(token, None) if isinstance(token, str) else None
        if found is not None:
            found.lock.release()

    def close(self) -> None:
        """End every session; write the summary once more (and a sweep's plots: too slow after every grade)."""
        for token in list(self._sessions):
            self.release(token)
        write_summary(self.output, self.rows, plots=True)

    def _expire(self) -> None:
        now = time.monotonic()
        for token, found in list(self._sessions.items()):
            if now - found.seen > IDLE_S:
                del self._sessions[token]
                found.lock.release()


def grading_app(board: GradingBoard):
    """The FastAPI app of the page: GET / (the page) and the JSON API it calls; errors are {"error": ...}."""
    from fastapi import FastAPI, Request
    from fastapi.responses import HTMLResponse, JSONResponse

    app = FastAPI(title="mlxlab grading", docs_url=None, redoc_url=None, openapi_url=None)
    html = PAGE.read_text(encoding="utf-8")

    @app.exception_handler(PageError)
    async def page_error(_request, err: PageError):
        return JSONResponse({"error": err.message}, status_code=err.status)

    async def body(request: Request) -> dict:
        try:
            data = await request.json()
        except ValueError:
            raise PageError(400, "the request body is not JSON") from None
        if not isinstance(data, dict):
            raise PageError(400, "the request body must be a JSON object")
        return data

    @app.get("/", response_class=HTMLResponse)
    def page():
        return html

    @app.post("/api/session")
    async def start(request: Request):
        return board.start((await body(request)).get("grader"))

    @app.post("/api/current")
    async def current(request: Request):
        return board.current((await body(request)).get("token"))

    @app.post("/api/grade")
    async def grade(request: Request):
        data = await body(request)
        return board.grade(data.get("token"), data.get("id"), data.get("grade"))

    @app.post("/api/skip")
    async def skip(request: Request):
        data = await body(request)
        return board.skip(data.get("token"), data.get("id"))

    @app.post("/api/release")
    async def release(request: Request):
        board.release((await body(request)).get("token"))
        return {"released": True}

    return app


class GradingPage:
    """The page served on `host:port` (port 0: a free one); `url` is known once made, `serve()` blocks."""

    def __init__(self, output: str | Path, *, host: str = "127.0.0.1", port: int = 8765, seed: int = 0):
        import uvicorn

        self.board = GradingBoard(output, seed)
        self._socket = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self._socket.bind((host, port))
            self._socket.listen(64)          # a browser opened on the printed URL waits instead of being refused
        except OSError as err:
            self._socket.close()
            raise MlxlabError(f"cannot serve the grading page on {host}:{port}: {err.strerror}",
                              hint="pick another --port (0: any free one)") from None
        bound = self._socket.getsockname()[1]
        self.url = f"http://{f'[{host}]' if ':' in host else host}:{bound}/"
        config = uvicorn.Config(grading_app(self.board), log_level="warning", access_log=False)
        self._server = uvicorn.Server(config)

    def serve(self) -> None:
        """Serve until Ctrl-C or `stop()`; then end every session and write the summary."""
        try:
            self._server.run(sockets=[self._socket])
        except KeyboardInterrupt:      # uvicorn stops on the first Ctrl-C, then raises it again: a normal end
            pass
        finally:
            self._socket.close()
            self.board.close()

    def stop(self) -> None:
        self._server.should_exit = True
