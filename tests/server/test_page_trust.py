"""The page's side of issue 9 in headless Chromium: a tap is "not a digit", two rows show as two rows, two
digits in One-digit mode suggest Number mode."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from test_page_browser import draw, wait_for_answer, write

pytestmark = pytest.mark.browser


def answer_rows(page: Any) -> list[str]:
    return list(page.locator("#answer .row").all_text_contents())


def test_a_tap_is_not_a_digit(page_factory: Callable[..., Any]) -> None:
    page = page_factory()
    draw(page, [[(300, 180)]])
    wait_for_answer(page)
    assert "doesn't look like a digit" in page.text_content("#verdict")
    assert page.locator("#seen img").count() == 0


def test_two_rows_show_as_two_rows(page_factory: Callable[..., Any]) -> None:
    page = page_factory()
    page.check("input[name=mode][value=number]")
    draw(page, write("12", 200, 30, 110, 40) + write("34", 200, 210, 110, 40))
    wait_for_answer(page)
    assert answer_rows(page) == ["12", "34"]
    assert "2 rows" in page.text_content("#verdict")


def test_two_digits_in_one_digit_mode_suggest_number_mode(page_factory: Callable[..., Any]) -> None:
    page = page_factory()
    page.check("input[name=mode][value=digit]")
    draw(page, write("42", 200, 80, 180, 60))
    wait_for_answer(page)
    assert page.get_attribute("#result", "data-state") == "unsure"
    assert page.is_visible("#use-number")
    page.click("#use-number")
    page.wait_for_function("() => document.querySelector('#answer').textContent === '42'", timeout=10_000)
