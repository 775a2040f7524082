"""``gentool serve``: the real server on a free loopback port, driven by the ``openai`` client, httpx
and (where Debian's chromium is installed) a headless browser.

One tiny gpt run, one tiny gan run and one tiny detector are trained once for the module (a few
seconds: the first training pays torch's optimizer import), then one server (with an API key)
answers every test.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import shutil
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
from gentool.serve import ServeConfig, start_background  # noqa: E402

KEY = "test-key"
CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
TINY_GPT = dict(n_layer=1, n_embd=32, n_head=2, block_size=32, eval_tokens=1024, iters_per_epoch=30, warmup_iters=2)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """Tiny gpt, gan and detector runs in an isolated runs folder, and a server on them."""
    import torch

    from gentool import plugins

    base = tmp_path_factory.mktemp("serve")
    mp = pytest.MonkeyPatch()
    mp.setenv("GENTOOL_RUNS", str(base / "runs"))
    mp.setenv("GENTOOL_CACHE", str(base / "cache"))
    mp.setenv("HF_HUB_OFFLINE", "1")
    mp.delenv("GENTOOL_PLUGINS", raising=False)
    before = plugins._REGISTRY
    plugins.get_registry(reload=True)
    threads = torch.get_num_threads()
    try:
        reg = plugins.get_registry()
        if not {"gpt", "gan"} <= set(reg.models):
            pytest.skip("the serve tests need the gpt and gan plugins (pip install -e plugins/gpt -e plugins/gan)")
        gentool.train("gpt", epochs=1, name="tiny", quiet=True, threads=1, **TINY_GPT)
        gentool.train("gan", epochs=1, name="tiny", quiet=True, threads=1, val_samples=0)
        detector = None
        if "detector" in reg.models:
            detector = _train_detector(base)
        server = start_background(ServeConfig(runs=base / "runs", api_key=KEY, device="cpu", queue_size=4))
        try:
            yield {"url": server.url, "server": server, "base": base, "detector": detector}
        finally:
            server.stop()
    finally:
        torch.set_num_threads(threads)
        plugins.set_registry(before)
        mp.undo()


def _train_detector(base: Path) -> Path:
    """A detector trained in about a second on 40 smooth textures and their up-sampled copies."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for kind in ("real", "fake"):
        (base / "rf" / kind).mkdir(parents=True)
    for i in range(40):
        small = rng.integers(0, 256, size=(4, 4, 3)).astype(np.uint8)
        real = np.asarray(Image.fromarray(small).resize((16, 16), Image.Resampling.BICUBIC))
        fake = np.asarray(Image.fromarray(real).resize((8, 8)).resize((16, 16), Image.Resampling.NEAREST))
        Image.fromarray(real).save(base / "rf" / "real" / f"{i}.png")
        Image.fromarray(fake).save(base / "rf" / "fake" / f"{i}.png")
    run = gentool.train("detector", data=str(base / "rf"), epochs=1, batch_size=16, name="tiny", quiet=True,
                        threads=1, width=4)
    return run.checkpoint


def client(served, key: str = KEY):
    return openai.OpenAI(base_url=served["url"] + "/v1", api_key=key, max_retries=0, timeout=60)


HELLO = [{"role": "user", "content": "Once upon a time"}]


# -- chat ------------------------------------------------------------------------------------------
def test_chat_whole_and_streamed_agree(served):
    c = client(served)
    whole = c.chat.completions.create(model="gpt/tiny", messages=HELLO, max_tokens=12, seed=7, temperature=1.0)
    text = whole.choices[0].message.content
    assert whole.object == "chat.completion" and text and whole.choices[0].finish_reason in ("stop", "length")
    u = whole.usage
    assert u.prompt_tokens > 0 and 0 < u.completion_tokens <= 12 and u.total_tokens == u.prompt_tokens + u.completion_tokens
    chunks = list(c.chat.completions.create(model="gpt/tiny", messages=HELLO, max_tokens=12, seed=7, temperature=1.0,
                                            stream=True, stream_options={"include_usage": True}))
    assert all(ch.object == "chat.completion.chunk" for ch in chunks)
    streamed = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert streamed == text
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == u.completion_tokens
    other = c.chat.completions.create(model="gpt/tiny", messages=HELLO, max_tokens=12, seed=8, temperature=1.0)
    assert other.choices[0].message.content != text  # the seed is honoured, not ignored


def test_stop_string_cuts_the_answer(served):
    c = client(served)
    ask = dict(model="gpt/tiny", messages=HELLO, max_tokens=20, seed=3, temperature=1.0)
    full = c.chat.completions.create(**ask).choices[0].message.content
    assert len(full) >= 6, full
    stop = full[4:6]
    cut = c.chat.completions.create(**ask, stop=[stop, "\u2603never"])
    assert cut.choices[0].message.content == full[: full.find(stop)]
    assert cut.choices[0].finish_reason == "stop"
    streamed = "".join(ch.choices[0].delta.content or "" for ch in c.chat.completions.create(**ask, stop=stop, stream=True))
    assert streamed == full[: full.find(stop)]


def test_models_list(served):
    ids = {m.id: m for m in client(served).models.list()}
    assert {"gpt/tiny", "gan/tiny"} <= set(ids)
    assert ids["gpt/tiny"].owned_by == "gentool"


def test_errors_in_openai_shape(served):
    c = client(served)
    with pytest.raises(openai.BadRequestError) as bad:
        c.chat.completions.create(model="gpt/tiny", messages=HELLO, temperature=5)
    err = bad.value.response.json()["error"]
    assert bad.value.status_code == 400 and err["type"] == "invalid_request_error" and err["param"] == "temperature"
    assert set(err) == {"message", "type", "param", "code"}
    with pytest.raises(openai.BadRequestError, match="max_tokens must be at most"):
        c.chat.completions.create(model="gpt/tiny", messages=HELLO, max_tokens=10**6)
    with pytest.raises(openai.NotFoundError) as missing:
        c.chat.completions.create(model="gpt/nope", messages=HELLO)
    assert missing.value.response.json()["error"]["code"] == "model_not_found"
    with pytest.raises(openai.BadRequestError, match="image model"):
        c.chat.completions.create(model="gan/tiny", messages=HELLO)
    with pytest.raises(openai.AuthenticationError):
        client(served, key="wrong").models.list()
    r = httpx.post(served["url"] + "/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"},
                   content=b"{" + b" " * (2 << 20) + b"}")
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"
    for body, ctype in ((b"{not json", "application/json"), (b"[1]", "application/json"), (b"{}", "text/plain")):
        r = httpx.post(served["url"] + "/v1/chat/completions", content=body, timeout=30,
                       headers={"Authorization": f"Bearer {KEY}", "Content-Type": ctype})
        assert r.status_code == 400 and "JSON" in r.json()["error"]["message"], r.text
    # unknown fields are ignored
    r = httpx.post(served["url"] + "/v1/chat/completions", headers={"Authorization": f"Bearer {KEY}"}, timeout=60,
                   json={"model": "gpt/tiny", "messages": HELLO, "max_tokens": 2, "frequency_penalty": 0.5, "foo": 1})
    assert r.status_code == 200, r.text


def test_busy_model_answers_503_then_serves_again(served):
    """With the model held and no room to wait, a request is refused at once; then served again."""
    from gentool.serve.openai_api import chat_slot

    state = served["server"].app.state.gentool
    slot = chat_slot(state, "gpt/tiny")
    release = threading.Event()
    held = asyncio.run_coroutine_threadsafe(state.gate.start(slot, lambda _m: release.wait(60)), state.loop)
    held.result(timeout=30)
    slot.queue_size, before = 0, slot.queue_size
    try:
        t = time.monotonic()
        with pytest.raises(openai.InternalServerError) as busy:
            client(served).chat.completions.create(model="gpt/tiny", messages=HELLO, max_tokens=2)
        assert busy.value.status_code == 503 and busy.value.response.json()["error"]["code"] == "queue_full"
        assert time.monotonic() - t < 30  # refused at once, not after the 60 s the model is held
    finally:
        slot.queue_size = before
        release.set()
    # seeded as in test_chat_whole_and_streamed_agree, whose answer is not empty: unseeded, the tiny
    # model's first sampled token is now and then its stop token, and the answer then has no tokens
    answer = client(served).chat.completions.create(model="gpt/tiny", messages=HELLO, max_tokens=2, seed=7,
                                                    temperature=1.0)
    assert answer.usage.completion_tokens > 0


# -- images, tools, runs ------------------------------------------------------------------------------
def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY}"}


def test_image_generation(served):
    from PIL import Image

    c = client(served)
    r = c.images.generate(model="gan/tiny", n=3, prompt="", extra_body={"seed": 5})
    pngs = [base64.b64decode(d.b64_json) for d in r.data]
    shape = gentool.load_checkpoint(served["base"] / "runs/gan/tiny/last.safetensors").data["shape"]
    images = [Image.open(io.BytesIO(p)) for p in pngs]
    assert len(images) == 3 and all(im.size == (shape[2], shape[1]) for im in images)
    again = c.images.generate(model="gan/tiny", n=3, prompt="", extra_body={"seed": 5})
    assert [d.b64_json for d in again.data] == [d.b64_json for d in r.data]
    bad = httpx.post(served["url"] + "/v1/images/generations", headers=_auth(), timeout=30,
                     json={"model": "gan/tiny", "n": 1, "options": {"nonsense": 1}})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "options"
    big = httpx.post(served["url"] + "/v1/images/generations", headers=_auth(), json={"model": "gan/tiny", "n": 10**5})
    assert big.status_code == 400 and big.json()["error"]["param"] == "n"


def test_detect_tool(served):
    if served["detector"] is None:
        pytest.skip("the detect plugin is not installed")
    good = (served["base"] / "rf" / "real" / "0.png").read_bytes()
    r = httpx.post(served["url"] + "/v1/tools/detect", headers=_auth(), timeout=60,
                   files=[("files", ("a.png", good, "image/png")), ("files", ("broken.png", b"not an image", "image/png"))],
                   data={"options": json.dumps({"heatmap": True})})
    assert r.status_code == 200, r.text
    a, broken = r.json()["results"]
    assert a["file"] == "a.png" and 0 <= a["probability"] <= 1 and a["verdict"] in ("real", "generated")
    assert base64.b64decode(a["png_b64"]).startswith(b"\x89PNG")
    assert broken["file"] == "broken.png" and "not an image" in broken["error"]
    tools = httpx.get(served["url"] + "/api/tools", headers=_auth()).json()["tools"]
    assert "detect" in [t["name"] for t in tools]
    bad = httpx.post(served["url"] + "/v1/tools/detect", headers=_auth(), files=[("files", ("a.png", good))],
                     data={"options": json.dumps({"threshold": 7})})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "options"
    # a client names runs of the served folder, never other files on the server or a hub
    ok = httpx.post(served["url"] + "/v1/tools/detect", headers=_auth(), files=[("files", ("a.png", good))],
                    data={"options": json.dumps({"checkpoint": "detector/tiny"})}, timeout=60)
    assert ok.status_code == 200 and "probability" in ok.json()["results"][0], ok.text
    for ref in (str(served["detector"].resolve()), "/etc/hostname", "../x.safetensors", "hf://owner/repo"):
        out = httpx.post(served["url"] + "/v1/tools/detect", headers=_auth(), files=[("files", ("a.png", good))],
                         data={"options": json.dumps({"checkpoint": ref})}, timeout=60)
        inside = ref == str(served["detector"].resolve())
        assert out.status_code == (200 if inside else 400), (ref, out.text)


def test_runs_api_and_schema(served):
    url = served["url"]
    runs = httpx.get(url + "/api/runs", headers=_auth()).json()["runs"]
    gan = next(r for r in runs if r["id"] == "gan/tiny")
    assert gan["modality"] == "image" and gan["grids"] == ["epoch_001.png"]
    detail = httpx.get(url + "/api/runs/gpt/tiny", headers=_auth()).json()
    assert any(r.get("type") == "epoch" for r in detail["metrics"]) and detail["config"]
    grid = httpx.get(url + "/api/runs/gan/tiny/grids/epoch_001.png", headers=_auth())
    assert grid.status_code == 200 and grid.content.startswith(b"\x89PNG")
    assert httpx.get(url + "/api/runs/gan/tiny/grids/..%2Fconfig.toml", headers=_auth()).status_code == 404
    assert httpx.get(url + "/api/runs/../tiny", headers=_auth()).status_code == 404
    assert httpx.get(url + "/api/runs").status_code == 401
    assert httpx.get(url + "/").status_code == 200  # the page loads without the key, then asks for it
    schema = httpx.get(url + "/openapi.json", headers=_auth()).json()
    assert {"/v1/chat/completions", "/v1/models", "/v1/images/generations", "/v1/tools/{name}"} <= set(schema["paths"])


# -- the core: open_chat, ChatSettings, missing extra ---------------------------------------------------
def test_open_chat_through_the_core(served):
    bot = gentool.open_chat(str(served["base"] / "runs/gpt/tiny"), device="cpu")
    assert isinstance(bot, gentool.ChatBackend)
    settings = gentool.ChatSettings(temperature=0.0, max_tokens=3, seed=0)
    assert len("".join(bot.chat_stream(HELLO, settings))) > 0 and bot.last_tokens <= 3
    from gentool_gpt.backends import Settings

    assert Settings is gentool.ChatSettings


def test_open_chat_without_a_chat_plugin(monkeypatch):
    from gentool import plugins

    monkeypatch.setattr(plugins, "_REGISTRY", plugins.Registry())
    with pytest.raises(gentool.GentoolError, match="no plugin opens chat models"):
        gentool.open_chat()


def test_serve_without_the_extra_is_one_line(monkeypatch):
    from gentool.serve import INSTALL_HINT, require_extra

    monkeypatch.setitem(sys.modules, "fastapi", None)
    with pytest.raises(gentool.GentoolError) as exc:
        require_extra()
    assert str(exc.value) == INSTALL_HINT and "\n" not in INSTALL_HINT


def test_stop_cutter_holds_back_a_possible_stop():
    from gentool.serve.openai_api import StopCutter

    cut = StopCutter(["END"])
    assert cut.push("abcE") == "abc" and cut.push("N") == "" and cut.push("x") == "ENx" and not cut.hit
    assert cut.push("yyE") == "yy" and cut.push("ND more") == "" and cut.hit


# -- the page, in a real browser --------------------------------------------------------------------
@pytest.fixture
def browser(tmp_path):
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("no chromium: apt-get install chromium chromium-driver")
    webdriver = pytest.importorskip("selenium.webdriver", reason="the browser test needs selenium (dev extra)")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,900"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(tmp_path / "profile", ignore_errors=True)


def _wait(what, timeout: float = 20):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = what()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def test_page_shows_runs_and_streams_chat(served, browser):
    from selenium.webdriver.common.by import By

    browser.get(served["url"] + f"/?key={KEY}")  # the key is stored by the page, and dropped from the URL
    _wait(lambda: browser.find_elements(By.CSS_SELECTOR, '#run-list li[data-id="gan/tiny"]'))
    assert "key=" not in browser.current_url
    _wait(lambda: browser.execute_script(  # clicked in the page: the list may be redrawn meanwhile
        "const li = document.querySelector('#run-list li[data-id=\"gan/tiny\"]'); if (li) li.click(); return !!li;"))
    loaded = _wait(lambda: browser.execute_script(
        "const i = document.querySelector('.panel[data-id=\"gan/tiny\"] img.grid-img');"
        "return i && i.complete && i.naturalWidth > 0 ? i.naturalWidth : 0;"))
    assert loaded > 0
    browser.find_element(By.CSS_SELECTOR, '#tabs button[data-tab="chat"]').click()
    _wait(lambda: browser.execute_script("return [...document.querySelectorAll('#chat-model option')].map(o => o.value)"))
    browser.execute_script("document.querySelector('#chat-model').value = 'gpt/tiny';"
                           "document.querySelector('#chat-seed').value = '1';")
    box = browser.find_element(By.ID, "chat-input")
    box.send_keys("Hello there")
    browser.find_element(By.ID, "chat-send").click()
    answer = _wait(lambda: browser.execute_script(
        "const m = document.querySelector('.msg.assistant .meta');"
        "return m ? m.parentElement.firstChild.textContent : '';"))
    assert answer.strip(), "the streamed answer is empty"
    assert not browser.find_elements(By.CSS_SELECTOR, ".msg.error")
