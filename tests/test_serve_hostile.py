"""``gentool serve`` against a hostile but realistic client (issue 30): the real command in its own
process, driven by httpx and the ``openai`` client.

A chat model that fails to load answers at once with a JSON error while the others keep answering;
bodies and fields of the wrong JSON type are refused in OpenAI's error shape, naming the field; a
tool's ``checkpoint`` is looked up in the runs folder only (symbolic links out of it refused); a
tool request's pixels are bounded; the settings are checked at start; shutdown is clean.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="gentool serve needs the serve extra: pip install -e '.[serve]'")
pytest.importorskip("uvicorn", reason="gentool serve needs the serve extra: pip install -e '.[serve]'")
pytest.importorskip("multipart", reason="the tools' uploads need python-multipart (the serve extra)")
openai = pytest.importorskip("openai", reason="the API tests drive the server with the openai client (dev extra)")
httpx = pytest.importorskip("httpx", reason="the API tests need httpx (dev extra)")

import gentool  # noqa: E402
from hostile_helpers import write_real_fake  # noqa: E402

KEY = "hostile-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
TINY_GPT = dict(n_layer=1, n_embd=32, n_head=2, block_size=32, eval_tokens=1024, iters_per_epoch=30, warmup_iters=2)
HELLO = [{"role": "user", "content": "Once upon a time"}]


def _env(base: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(GENTOOL_RUNS=str(base / "runs"), GENTOOL_CACHE=str(base / "cache"), HF_HUB_OFFLINE="1",
               OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env.pop("GENTOOL_PLUGINS", None)
    return env


def _start(base: Path, *args: str) -> tuple[subprocess.Popen, str]:
    """``gentool serve --port 0 ARGS`` in its own process; its URL once it listens."""
    proc = subprocess.Popen([sys.executable, "-m", "gentool", "serve", "--port", "0", "--device", "cpu", *args],
                            env=_env(base), cwd=base, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = proc.stdout.readline()  # "gentool serve: http://127.0.0.1:PORT/ (page), ..."
    if "http://" not in line:
        proc.kill()
        raise AssertionError(f"gentool serve did not start: {line}{proc.stderr.read()}")
    host = line.split("http://", 1)[1].split("/", 1)[0]
    return proc, f"http://{host}"


def _detector(base: Path) -> None:
    """A tiny detector run (about a second): smooth textures against their up-sampled copies."""
    write_real_fake(base / "rf")
    gentool.train("detector", data=str(base / "rf"), epochs=1, batch_size=16, name="tiny", quiet=True, threads=1,
                  width=4)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Runs: gpt/tiny (good), gpt/badg (truncated, the newest text run), gan/tiny, detector/tiny, and
    two symbolic links out of the runs folder (detector/evil, gpt/evil); ``gentool serve`` on them."""
    import torch

    from gentool import plugins

    base = tmp_path_factory.mktemp("hostile-serve")
    mp = pytest.MonkeyPatch()
    for k, v in _env(base).items():
        if k.startswith(("GENTOOL", "HF_")):
            mp.setenv(k, v)
    mp.delenv("GENTOOL_PLUGINS", raising=False)
    before = plugins._REGISTRY
    plugins.get_registry(reload=True)
    threads = torch.get_num_threads()
    proc = None
    try:
        reg = plugins.get_registry()
        if not {"gpt", "gan", "detector"} <= set(reg.models):
            pytest.skip("these tests need the gpt, gan and detect plugins")
        gentool.train("gpt", epochs=1, name="tiny", quiet=True, threads=1, **TINY_GPT)
        gentool.train("gan", epochs=1, name="tiny", quiet=True, threads=1, val_samples=0)
        _detector(base)
        runs = base / "runs"
        good = runs / "gpt" / "tiny" / "last.safetensors"
        (runs / "gpt" / "badg").mkdir()
        data = good.read_bytes()
        (runs / "gpt" / "badg" / "last.safetensors").write_bytes(data[: len(data) // 2])  # header whole, tensors cut
        (runs / "gan" / "badi").mkdir()
        gan = (runs / "gan" / "tiny" / "last.safetensors").read_bytes()
        (runs / "gan" / "badi" / "last.safetensors").write_bytes(gan[: len(gan) // 2])
        later = time.time() + 60
        os.utime(runs / "gpt" / "badg" / "last.safetensors", (later, later))  # the newest text run: "default"
        shutil.copytree(runs / "detector" / "tiny", base / "outside" / "detector-run")
        shutil.copytree(runs / "gpt" / "tiny", base / "outside" / "gpt-run")
        (runs / "detector" / "evil").symlink_to(base / "outside" / "detector-run")
        (runs / "gpt" / "evil").symlink_to(base / "outside" / "gpt-run")
        proc, url = _start(base, "--runs", str(runs), "--api-key", KEY, "--queue", "16")
        yield {"url": url, "base": base, "proc": proc}
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        torch.set_num_threads(threads)
        plugins.set_registry(before)
        mp.undo()


def client(server):
    return openai.OpenAI(base_url=server["url"] + "/v1", api_key=KEY, max_retries=0, timeout=30)


def _png(width: int, height: int) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (90, 120, 150)).save(buf, format="PNG")
    return buf.getvalue()


# -- 1: a chat model that cannot load ------------------------------------------------------------------
def test_a_failing_chat_model_answers_at_once_while_others_keep_answering(server):
    url = server["url"]
    answers: list[tuple[float, int, dict]] = []

    def ask(model: str, stream: bool) -> None:
        t = time.monotonic()
        r = httpx.post(url + "/v1/chat/completions", headers=AUTH, timeout=20,
                       json={"model": model, "messages": HELLO, "max_tokens": 4, "stream": stream})
        answers.append((time.monotonic() - t, r.status_code, r.json()))

    # twelve at once, streamed or not, by name and as "default" (the newest text run is the broken one)
    asks = [threading.Thread(target=ask, args=(m, i % 2 == 0)) for i, m in enumerate(["gpt/badg", "default"] * 6)]
    for t in asks:
        t.start()
    good = client(server).chat.completions.create(model="gpt/tiny", messages=HELLO, max_tokens=4, seed=7,
                                                  temperature=1.0)
    for t in asks:
        t.join(30)
    assert good.choices[0].finish_reason in ("stop", "length")
    assert len(answers) == 12, "requests for a model that cannot load still hang"
    for took, status, doc in answers:
        assert status == 400 and doc["error"]["code"] == "model_not_loadable" and doc["error"]["param"] == "model"
        assert "truncated" in doc["error"]["message"] and "\n" not in doc["error"]["message"]
    # the twelve share one failed load attempt (they are not tried one after another): all answered
    # within a second of each other and well before a client's timeout (the attempt itself imports
    # the plugin's model code: about 2.5 s on a busy 2-core machine)
    took = sorted(a[0] for a in answers)
    assert took[-1] - took[0] < 1.0 and took[-1] < 10.0, took
    # once known not to load, it is refused at once, and the other models still answer
    t = time.monotonic()
    with pytest.raises(openai.BadRequestError, match="truncated"):
        client(server).chat.completions.create(model="gpt/badg", messages=HELLO, max_tokens=2, stream=True)
    assert time.monotonic() - t < 1.0
    again = client(server).chat.completions.create(model="gpt/tiny", messages=HELLO, max_tokens=4, seed=7,
                                                   temperature=1.0)
    assert again.choices[0].message.content == good.choices[0].message.content
    # a path on the server is no chat model of this server
    with pytest.raises(openai.NotFoundError):
        client(server).chat.completions.create(model="/etc/passwd", messages=HELLO, max_tokens=2)


class _Slow:
    """A chat backend that takes half a second a token (six at most) and counts them."""

    context_length, stop_reason, last_tokens, cut_tokens = 100, "", 0, 0

    def __init__(self) -> None:
        self.produced = 0

    def reseed(self, seed):
        pass

    def count_tokens(self, messages):
        return 3

    def describe(self):
        return {}

    def chat_stream(self, messages, settings):
        for i in range(6):
            time.sleep(0.5)
            self.produced = self.last_tokens = i + 1
            yield "x"
        self.stop_reason = "max tokens"


def test_a_client_that_hangs_up_stops_its_generation(tmp_path):
    """A non-streamed answer whose client has gone is stopped at its next token: no request
    outlives its client (the server in a thread, its chat model a slow stand-in)."""
    from gentool.serve import ServeConfig, start_background
    from gentool.serve.openai_api import chat_key

    (tmp_path / "runs").mkdir()
    with start_background(ServeConfig(runs=tmp_path / "runs", chat_model="slow", device="cpu")) as srv:
        slow = _Slow()
        srv.app.state.gentool.gate.slot(chat_key("slow"), lambda: slow, label="model slow").obj = slow
        ask = {"model": "slow", "messages": HELLO}
        whole = httpx.post(srv.url + "/v1/chat/completions", json=ask, timeout=30)
        assert whole.status_code == 200 and whole.json()["choices"][0]["message"]["content"] == "xxxxxx"
        slow.produced = 0
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(srv.url + "/v1/chat/completions", json=ask, timeout=1.2)
        time.sleep(3.5)
        assert slow.produced <= 4, slow.produced  # six when the generation outlives its client
        again = httpx.post(srv.url + "/v1/chat/completions", json=ask, timeout=30)
        assert again.status_code == 200  # and the model is free for the next request


def test_every_route_that_loads_a_model_says_why_it_cannot(server):
    """The image route too: a truncated checkpoint is a 400 naming it, at once the second time."""
    for _ in range(2):
        t = time.monotonic()
        r = httpx.post(server["url"] + "/v1/images/generations", headers=AUTH, timeout=30,
                       json={"model": "gan/badi", "n": 1})
        assert r.status_code == 400 and r.json()["error"]["code"] == "model_not_loadable", r.text
        assert "truncated" in r.json()["error"]["message"] and time.monotonic() - t < 5
    ok = httpx.post(server["url"] + "/v1/images/generations", headers=AUTH, timeout=60, json={"model": "gan/tiny", "n": 1})
    assert ok.status_code == 200, ok.text


# -- 5 and 9: bodies and JSON types -------------------------------------------------------------------------
def test_a_missing_or_empty_body_says_so(server):
    for kwargs in ({}, {"content": b""}, {"content": b"", "headers": {"Content-Type": "application/json"}}):
        headers = {**AUTH, **kwargs.pop("headers", {})}
        r = httpx.post(server["url"] + "/v1/chat/completions", headers=headers, timeout=30, **kwargs)
        err = r.json()["error"]
        assert r.status_code == 400 and "None" not in err["message"] and "body" in err["message"], r.text


@pytest.mark.parametrize("field,value,param", [
    ("temperature", True, "temperature"), ("top_p", True, "top_p"), ("top_k", True, "top_k"),
    ("max_tokens", True, "max_tokens"), ("seed", True, "seed"), ("n", True, "n"), ("top_k", 1.5, "top_k"),
    ("stream", "yes", "stream"), ("stream_options", {"include_usage": "yes"}, "stream_options.include_usage"),
])
def test_chat_fields_take_json_types_only(server, field, value, param):
    r = httpx.post(server["url"] + "/v1/chat/completions", headers=AUTH, timeout=30,
                   json={"model": "gpt/tiny", "messages": HELLO, "max_tokens": 2, field: value})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["param"] == param and param in err["message"]


def test_image_and_tool_options_take_json_types_only(server):
    url = server["url"]
    r = httpx.post(url + "/v1/images/generations", headers=AUTH, timeout=30,
                   json={"model": "gan/tiny", "n": 1, "options": {"interpolate": "yes"}})
    assert r.status_code == 400 and "options.interpolate" in r.json()["error"]["message"], r.text
    r = httpx.post(url + "/v1/images/generations", headers=AUTH, timeout=30, json={"model": "gan/tiny", "n": True})
    assert r.status_code == 400 and r.json()["error"]["param"] == "n", r.text
    tiny = _png(8, 8)
    for tool, options, field in (("upscale", {"tile": 1e9}, "tile"), ("upscale", {"tile": True}, "tile"),
                                 ("detect", {"heatmap": "yes"}, "heatmap"), ("detect", {"threshold": True}, "threshold")):
        r = httpx.post(url + f"/v1/tools/{tool}", headers=AUTH, timeout=30, files=[("files", ("a.png", tiny))],
                       data={"options": json.dumps(options)})
        assert r.status_code == 400 and f"options.{field}" in r.json()["error"]["message"], (tool, r.text)
    ok = httpx.post(url + "/v1/images/generations", headers=AUTH, timeout=60,
                    json={"model": "gan/tiny", "n": 1, "options": {"interpolate": False}})
    assert ok.status_code == 200, ok.text


# -- 4: a tool's checkpoint ------------------------------------------------------------------------------
def test_tool_checkpoint_is_looked_up_in_the_runs_folder_only(server):
    url, base = server["url"], server["base"]
    image = (base / "rf" / "real" / "0.png").read_bytes()

    def detect(ref: str | None) -> httpx.Response:
        options = {} if ref is None else {"checkpoint": ref}
        return httpx.post(url + "/v1/tools/detect", headers=AUTH, timeout=60, files=[("files", ("a.png", image))],
                          data={"options": json.dumps(options)})

    inside = base / "runs" / "detector" / "tiny"
    for ref in (None, "tiny", "detector/tiny", "detector/tiny/last.safetensors", "detector/tiny/best.safetensors",
                str(inside), str(inside / "last.safetensors"), "gpt/../detector/tiny"):
        r = detect(ref)
        assert r.status_code == 200 and "probability" in r.json()["results"][0], (ref, r.text)
    outside = base / "outside" / "detector-run" / "last.safetensors"
    for ref in ("evil", "detector/evil", "detector/evil/last.safetensors", str(outside), "../outside/detector-run",
                "../../etc/hostname", "/etc/hostname", "hf://owner/repo"):
        r = detect(ref)
        assert r.status_code == 400 and r.json()["error"]["param"] == "options", (ref, r.text)
    assert detect("detector/nosuch").status_code == 400
    assert "empty" in detect("").json()["error"]["message"]  # not the newest run in disguise
    # a run linked in from outside is not served at all
    runs = {r["id"] for r in httpx.get(url + "/api/runs", headers=AUTH).json()["runs"]}
    assert "gpt/tiny" in runs and not {"gpt/evil", "detector/evil"} & runs
    assert httpx.post(url + "/v1/chat/completions", headers=AUTH, timeout=30,
                      json={"model": "gpt/evil", "messages": HELLO}).status_code == 404


# -- 11: what one tool request may cost ----------------------------------------------------------------
def test_tool_requests_are_bounded_in_pixels(server):
    url = server["url"]
    limits = httpx.get(url + "/api/info", headers=AUTH).json()["limits"]
    assert limits["max_pixels"] == 1 << 20
    huge = _png(6000, 6000)  # the upload of the issue: 60 s and 1.87 GB in one upscale request
    for tool in ("upscale", "translate", "detect"):
        t = time.monotonic()
        r = httpx.post(url + f"/v1/tools/{tool}", headers=AUTH, timeout=30,
                       files=[("files", ("huge.png", huge))], data={"options": "{}"})
        assert r.status_code == 413 and r.json()["error"]["code"] == "too_many_pixels", (tool, r.text)
        assert "huge.png" in r.json()["error"]["message"] and time.monotonic() - t < 10
    # the bound is on the request: several files that pass one by one are refused together
    many = [("files", (f"{i}.png", _png(800, 800))) for i in range(2)]
    r = httpx.post(url + "/v1/tools/detect", headers=AUTH, timeout=30, files=many, data={"options": "{}"})
    assert r.status_code == 413 and r.json()["error"]["code"] == "too_many_pixels", r.text
    small = httpx.post(url + "/v1/tools/detect", headers=AUTH, timeout=60, files=[("files", ("s.png", _png(64, 64)))],
                       data={"options": "{}"})
    assert small.status_code == 200 and "probability" in small.json()["results"][0], small.text


# -- 8: settings checked at start -----------------------------------------------------------------------------
def test_serve_checks_its_settings_at_start(server):
    base = server["base"]
    bad = base / "runs" / "gpt" / "badg" / "last.safetensors"
    for args, words in ((["--runs", "/etc/passwd"], "not a folder"), (["--runs", str(base / "nonexistent")], "does not exist"),
                        (["--chat-model", "/etc/passwd"], "/etc/passwd"), (["--chat-model", str(bad)], "truncated"),
                        (["--chat-model", ""], "empty"), (["--max-pixels", "0"], "max-pixels")):
        try:
            out = subprocess.run([sys.executable, "-m", "gentool", "serve", "--port", "0", *args], env=_env(base),
                                 cwd=base, capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"gentool serve {' '.join(args)} started instead of refusing") from None
        assert out.returncode != 0 and words in out.stderr and "Traceback" not in out.stderr, (args, out.stderr)
        if "--max-pixels" not in args:
            assert len(out.stderr.strip().splitlines()) == 1, out.stderr
    # a taken port is said first, before a chat model is even opened (its load could take minutes)
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        out = subprocess.run([sys.executable, "-m", "gentool", "serve", "--port", str(taken.getsockname()[1]),
                              "--chat-model", "/etc/passwd"], env=_env(base), cwd=base, capture_output=True,
                             text=True, timeout=60)
    assert out.returncode != 0 and "Address already in use" in out.stderr and "passwd" not in out.stderr, out.stderr
    # a good --chat-model is opened at start and listed; --max-pixels sets the tools' bound
    proc, url = _start(base, "--chat-model", str(base / "runs" / "gpt" / "tiny"), "--max-pixels", "5000")
    try:
        ids = [m["id"] for m in httpx.get(url + "/v1/models").json()["data"]]
        assert str(base / "runs" / "gpt" / "tiny") in ids
        r = httpx.post(url + "/v1/chat/completions", timeout=60,
                       json={"model": "default", "messages": HELLO, "max_tokens": 2})
        assert r.status_code == 200, r.text
        assert httpx.get(url + "/api/info").json()["limits"]["max_pixels"] == 5000
        r = httpx.post(url + "/v1/tools/detect", timeout=30, files=[("files", ("a.png", _png(100, 100)))])
        assert r.status_code == 413 and "5,000" in r.json()["error"]["message"], r.text
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)


# -- shutdown -----------------------------------------------------------------------------------------------
def test_shutdown_after_hostile_requests_is_clean(server):
    """Last in this module: the requests above left no task behind; Ctrl-C stops at once, quietly."""
    proc = server["proc"]
    url = server["url"]
    for _ in range(3):
        httpx.post(url + "/v1/chat/completions", headers=AUTH, timeout=20,
                   json={"model": "gpt/badg", "messages": HELLO, "stream": True})
    t = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - t < 10
    assert "Traceback" not in err and "never retrieved" not in err and "CancelledError" not in err, err


def test_the_page_sends_options_in_json_types():
    """The page's forms read text; what they send must pass the server's JSON types (a number field
    a number, "none" of an optional field null), or every Sample and tool form would be refused."""
    node = shutil.which("node")
    if node is None:
        pytest.skip("no node to run the page's script")
    from gentool.serve.runs_api import option_fields
    from gentool.serve.strict import check_json_options
    from gentool_detect.configs import DetectToolOptions
    from gentool_gan.configs import GANSampleOptions
    from gentool_gan.tools import UpscaleToolOptions

    typed = {"tile": "64", "stage": "pixel", "threshold": "0.7", "checkpoint": "none", "label": "3", "keyframes": "4"}
    cases = []
    for cls in (UpscaleToolOptions, DetectToolOptions, GANSampleOptions):
        fields = {f["name"]: f["type"] for f in option_fields(cls) if f["type"] != "bool"}
        cases.append((cls, {k: [typed[k], t] for k, t in fields.items()}))
    script = Path(__file__).resolve().parents[1] / "gentool" / "serve" / "static" / "app.js"
    js = ("const src = require('fs').readFileSync(process.argv[1], 'utf8');"
          "eval(src.slice(src.indexOf('function typedValue'), src.indexOf('function optionValues')));"
          "const cases = JSON.parse(process.argv[2]); const out = {};"
          "for (const [k, [text, type]] of Object.entries(cases)) out[k] = typedValue(text, type);"
          "console.log(JSON.stringify(out));")
    for cls, fields in cases:
        res = subprocess.run([node, "-e", js, str(script), json.dumps(fields)], capture_output=True, text=True,
                             timeout=30)
        assert res.returncode == 0, res.stderr
        sent = json.loads(res.stdout)
        check_json_options(cls, sent)  # no 400
        assert all(v is None for k, v in sent.items() if fields[k][0] == "none")
