"""Corrections on the page (issue 11) in headless Chromium against a real server and store: say an answer is
wrong, see it saved (and in `digitrec feedback list`), undo it; the token prompt; no button when feedback is off."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from test_page_browser import SEVEN, draw, wait_for_answer

from digitrec.server.settings import ServerSettings

pytestmark = pytest.mark.browser


@pytest.fixture
def open_page(browser: Any, model_path: Path, tmp_path: Path,
              server_runner: Callable[..., Any]) -> Iterator[Callable[..., Any]]:
    """open_page(**settings) -> the page, served with those settings and a fresh SQLite store in tmp_path."""
    contexts: list[Any] = []
    with_servers: list[Any] = []

    def start(**overrides: Any) -> Any:
        settings = ServerSettings(model_path=model_path, store=str(tmp_path / "corrections.sqlite3"), **overrides)
        manager = server_runner(settings)
        url = manager.__enter__()
        with_servers.append(manager)
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        contexts.append(context)
        page = context.new_page()
        page.goto(url + "/")
        page.wait_for_load_state("networkidle")  # GET /api/v1/model answered: the page knows the feedback mode
        return page

    yield start
    for context in contexts:
        context.close()
    for manager in with_servers:
        manager.__exit__(None, None, None)


def listed(page: Any, token: str | None = None) -> list[dict[str, Any]]:
    """GET /api/v1/feedback from the page's server."""
    headers = {"authorization": f"Bearer {token}"} if token else {}
    response = page.request.get(page.url + "api/v1/feedback", headers=headers)
    assert response.ok, response.text()
    return list(response.json()["items"])


def stored(tmp_path: Path) -> list[dict[str, Any]]:
    """What `digitrec feedback list --json` says is in the test's store."""
    done = subprocess.run([sys.executable, "-m", "digitrec", "feedback", "list", "--json",
                           "--store", str(tmp_path / "corrections.sqlite3")],
                          capture_output=True, text=True, timeout=60, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert done.returncode == 0, done.stderr
    listing = json.loads(done.stdout)
    return listing["items"] if isinstance(listing, dict) else listing


def test_correct_an_answer_then_undo(open_page: Callable[..., Any], tmp_path: Path) -> None:
    page = open_page()
    draw(page, SEVEN)
    assert wait_for_answer(page) == "7"
    page.click("#wrong")
    page.fill("#correct-digits input", "1")  # say it was a 1
    page.click("#correct-form button[type=submit]")
    page.wait_for_function("() => document.querySelector('#correct-status').textContent.startsWith('Saved')")
    assert "1" in page.text_content("#correct-status")
    [correction] = stored(tmp_path)
    assert correction["label"] == "1"
    assert correction["source"] == "page"
    page.click("#correct-undo")
    page.wait_for_function("() => document.querySelector('#correct-status').textContent === 'Correction removed.'")
    assert listed(page) == []


def test_not_a_digit_correction(open_page: Callable[..., Any], tmp_path: Path) -> None:
    page = open_page()
    draw(page, SEVEN)
    wait_for_answer(page)
    page.click("#wrong")
    page.click("#not-digit")
    page.wait_for_function("() => document.querySelector('#correct-status').textContent.startsWith('Saved')")
    assert "not a digit" in page.text_content("#correct-status")
    [correction] = listed(page)
    assert correction["label"] == "none"


def test_token_is_asked_for(open_page: Callable[..., Any], tmp_path: Path) -> None:
    page = open_page(api_token="s3cret-token")
    draw(page, SEVEN)
    wait_for_answer(page)
    page.click("#wrong")
    assert page.is_visible("#token")
    page.fill("#correct-digits input", "1")
    page.click("#correct-form button[type=submit]")  # no token yet: refused, and the page says why
    page.wait_for_function("() => document.querySelector('#correct-status').textContent.startsWith('Not saved')")
    assert "token" in page.text_content("#correct-status")
    page.fill("#token", "s3cret-token")
    page.click("#correct-form button[type=submit]")
    page.wait_for_function("() => document.querySelector('#correct-status').textContent.startsWith('Saved')")
    assert len(listed(page, "s3cret-token")) == 1


def test_no_correction_button_when_feedback_is_off(open_page: Callable[..., Any]) -> None:
    page = open_page(host="0.0.0.0")  # an exposed host with no token: feedback is off (the test binds loopback)
    draw(page, SEVEN)
    assert wait_for_answer(page) == "7"
    assert not page.is_visible("#wrong")
