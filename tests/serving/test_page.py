"""The service's page in a real browser: headless Chromium (Debian's `chromium`, driven by Playwright)
types a paragraph and a question and sees the answer highlighted, with its probability and n-best.

CI (`QA_SCALE_REQUIRE_SHARED=1`, `.ci/run` installs chromium) fails when the browser is missing;
elsewhere the test skips, saying why.
"""

from __future__ import annotations

import os
import shutil
import threading
import time

import pytest
from cli_runs import free_port
from reader_runs import make_readers

from qa_scale.serving.answering import Query, answer
from qa_scale.inference.options import ReaderOptions
from qa_scale.serving.readers import load_panel

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


def chromium() -> str:
    """Debian's chromium (skips, or fails under CI, when it or Playwright is missing)."""
    path = os.environ.get("QA_SCALE_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    missing = None
    if not os.path.exists(path):
        missing = f"chromium not found at {path} (apt-get install chromium)"
    else:
        try:
            import playwright  # noqa: F401
        except ImportError:
            missing = "playwright is not installed (pip install -e '.[test]')"
    if missing is None:
        return path
    if os.environ.get("QA_SCALE_REQUIRE_SHARED") == "1":
        pytest.fail(f"{missing} (QA_SCALE_REQUIRE_SHARED=1: the browser test must run)")
    pytest.skip(missing)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`qa-scale serve`'s app on a free localhost port, in a thread, over the three tiny readers."""
    import uvicorn

    from qa_scale.serving.app import create_app

    browser = chromium()
    work = make_readers(tmp_path_factory.mktemp("page"))
    panel = load_panel(work["models"], ReaderOptions(device="cpu"))
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(panel), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 30
    while not srv.started and time.time() < deadline:
        time.sleep(0.05)
    assert srv.started, "uvicorn did not start"
    yield {"url": f"http://127.0.0.1:{port}/", "panel": panel, "browser": browser}
    srv.should_exit = True
    thread.join(timeout=10)


def test_the_page_highlights_the_answer_in_the_paragraph(server):
    from playwright.sync_api import sync_playwright

    context = "北京是中国的首都，上海是中国最大的城市。张伟于1987年出生在杭州，2010年毕业于浙江大学。"
    question = "张伟在哪里出生？"
    want = answer(server["panel"], [Query(context, question)], nbest=True)[0]
    assert want["answer"]  # a tiny reader's answer, but a span: something to highlight
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=server["browser"], args=FLAGS)
        try:
            page = browser.new_page()
            page.goto(server["url"])
            page.wait_for_function("document.getElementById('info').textContent.includes('3 reader(s)')")
            page.fill("#context", context)
            page.fill("#question", question)
            page.press("#question", "Enter")
            mark = page.wait_for_selector(".answer .paragraph mark", timeout=30_000)
            assert mark.inner_text() == want["answer"]
            assert page.inner_text(".answer .paragraph") == context  # the whole paragraph, one span marked
            assert page.inner_text(".answer .question") == "Q: " + question
            assert f"probability {100 * want['probability']:.1f}%" in page.inner_text(".answer .result")
            page.click(".answer summary")
            items = page.query_selector_all(".answer .nbest li")
            assert len(items) == len(want["nbest"]) and items[0].inner_text().startswith(want["nbest"][0]["text"])
            items[1].click()  # an alternative: highlighted in its place
            assert page.inner_text(".answer .paragraph mark") == want["nbest"][1]["text"]
            page.fill("#context", "")
            page.click("#ask")
            page.wait_for_function("document.getElementById('status').textContent.includes('context: is empty')")
        finally:
            browser.close()


def test_offsets_after_astral_characters_and_no_failed_requests(server):
    """The service counts code points and the page must too: characters outside the BMP (𠮷, emoji; two
    UTF-16 units each in JavaScript) before the answer used to shift the highlight. And the page asks
    for nothing that is not there (a missing favicon was a 404 in the console)."""
    from playwright.sync_api import sync_playwright

    context = "𠮷𠮷😀😀北京是中国的首都，上海是中国最大的城市。张伟于1987年出生在杭州，2010年毕业于浙江大学。"
    question = "张伟在哪里出生？"
    want = answer(server["panel"], [Query(context, question)], nbest=True)[0]
    assert want["answer"] and want["start"] >= 4  # the span lies after the astral characters
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=server["browser"], args=FLAGS)
        try:
            page = browser.new_page()
            failed = []
            page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
            page.goto(server["url"])
            page.wait_for_function("document.getElementById('info').textContent.includes('3 reader(s)')")
            page.fill("#context", context)
            page.fill("#question", question)
            page.press("#question", "Enter")
            mark = page.wait_for_selector(".answer .paragraph mark", timeout=30_000)
            assert mark.inner_text() == want["answer"] == context[want["start"]:want["end"]]
            assert page.inner_text(".answer .paragraph") == context
            assert not failed, failed
        finally:
            browser.close()
