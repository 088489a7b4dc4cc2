"""The page at / in headless Chromium against the live server: draw, upload, drop, paste, clear, layouts."""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.browser

SCREENSHOTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "screenshots"

Point = tuple[float, float]
SEVEN: list[list[Point]] = [[(230, 80), (300, 80), (370, 80), (345, 150), (318, 220), (295, 290)]]
ANSWERED = "#result[data-state=sure], #result[data-state=unsure], #result[data-state=none], #result[data-state=error]"


# Digits as pen paths in a unit box (x right, y down): simple printed shapes.
GLYPHS: dict[str, list[list[Point]]] = {
    "0": [[(0.5, 0), (0.15, 0.2), (0.1, 0.5), (0.15, 0.8), (0.5, 1), (0.85, 0.8), (0.9, 0.5), (0.85, 0.2),
           (0.5, 0)]],
    "1": [[(0.35, 0.15), (0.55, 0), (0.55, 1)]],
    "2": [[(0.1, 0.25), (0.3, 0.02), (0.7, 0.02), (0.9, 0.25), (0.85, 0.45), (0.1, 1), (0.95, 1)]],
    "3": [[(0.1, 0.05), (0.85, 0.05), (0.45, 0.45), (0.85, 0.65), (0.8, 0.9), (0.5, 1), (0.1, 0.9)]],
    "4": [[(0.65, 1), (0.65, 0), (0.05, 0.7), (0.95, 0.7)]],
    "6": [[(0.8, 0.05), (0.4, 0.2), (0.15, 0.6), (0.25, 0.95), (0.6, 1), (0.85, 0.75), (0.6, 0.5), (0.2, 0.65)]],
}


def write(text: str, left: float, top: float, height: float, gap: float) -> list[list[Point]]:
    """Strokes for `text` in canvas pixels: digits `height` tall, 0.6 as wide, `gap` apart."""
    strokes = []
    width = 0.6 * height
    for index, char in enumerate(text):
        x0 = left + index * (width + gap)
        strokes += [[(x0 + x * width, top + y * height) for x, y in stroke] for stroke in GLYPHS[char]]
    return strokes


def draw(page: Any, strokes: Sequence[Sequence[Point]]) -> None:
    """Draw strokes with the mouse; points are in the canvas's own 600x360 pixels."""
    box = page.locator("#pad").bounding_box()
    width, height = page.eval_on_selector("#pad", "pad => [pad.width, pad.height]")

    def to_screen(point: Point) -> Point:
        return box["x"] + point[0] * box["width"] / width, box["y"] + point[1] * box["height"] / height

    for stroke in strokes:
        page.mouse.move(*to_screen(stroke[0]))
        page.mouse.down()
        for point in stroke[1:]:
            page.mouse.move(*to_screen(point), steps=6)
        page.mouse.up()


def wait_for_answer(page: Any) -> str:
    page.wait_for_selector(ANSWERED, timeout=10_000)
    page.wait_for_function("() => !document.querySelector('#result').dataset.busy")
    return page.text_content("#answer")


def upload(page: Any, data: bytes, name: str = "digit.png") -> None:
    page.set_input_files("#file", files=[{"name": name, "mimeType": "image/png", "buffer": data}])


def bars(page: Any) -> dict[int, float]:
    """The width of each digit's probability bar, as a fraction of its track (as set, not mid-transition)."""
    widths = page.eval_on_selector_all(
        "#bars .bar-row", "rows => rows.map(row => parseFloat(row.querySelector('.bar-fill').style.width) / 100)"
    )
    return dict(enumerate(widths))


def test_draw_a_digit_with_the_mouse(page_factory: Callable[..., Any]) -> None:
    page = page_factory()
    draw(page, SEVEN)
    assert wait_for_answer(page) == "7"
    assert page.get_attribute("#result", "data-state") == "sure"
    assert page.locator("#seen img").count() == 1
    assert page.locator("#boxes rect").count() == 1
    assert page.console_errors == []


def test_upload_a_file_shows_answer_and_bars(page_factory: Callable[..., Any],
                                             digit_png: Callable[[int], bytes]) -> None:
    page = page_factory()
    upload(page, digit_png(2))
    assert wait_for_answer(page) == "2"
    widths = bars(page)
    assert max(widths, key=widths.__getitem__) == 2
    assert widths[2] > 0.5
    assert sum(widths.values()) == pytest.approx(1, abs=0.05)
    assert page.text_content("#bars .bar-row.best .bar-label") == "2"
    # The preview shows under a see-through canvas (drawing on it starts a new drawing).
    assert page.is_visible("#preview")
    assert page.eval_on_selector("#pad", "pad => pad.getContext('2d').getImageData(0, 0, 600, 360).data"
                                         ".every((value, index) => index % 4 !== 3 || value === 0)")
    assert page.console_errors == []


def test_upload_a_number_shows_boxes_and_each_digit_seen(page_factory: Callable[..., Any],
                                                         number_png: Callable[[str], bytes]) -> None:
    page = page_factory()
    page.check("input[name=mode][value=number]")
    upload(page, number_png("4096"), "number.png")
    assert wait_for_answer(page) == "4096"
    assert page.locator("#boxes rect").count() == 4
    assert page.locator("#seen img").count() == 4
    page.click("#seen button:nth-child(3)")  # the 9: its probabilities replace the 4's
    assert max(bars(page).items(), key=lambda item: item[1])[0] == 9


def test_blank_upload_says_no_digit_found(page_factory: Callable[..., Any]) -> None:
    import cv2
    import numpy as np

    page = page_factory()
    blank = cv2.imencode(".png", np.full((120, 160), 255, np.uint8))[1]
    upload(page, blank.tobytes(), "blank.png")
    wait_for_answer(page)
    assert page.get_attribute("#result", "data-state") == "none"
    assert "No digit found" in page.text_content("#verdict")


def test_clear_resets_the_page(page_factory: Callable[..., Any]) -> None:
    page = page_factory()
    draw(page, SEVEN)
    wait_for_answer(page)
    page.click("#clear")
    assert page.get_attribute("#result", "data-state") == "empty"
    assert page.text_content("#answer") == "–"
    assert max(bars(page).values()) == 0
    assert page.locator("#boxes rect").count() == 0
    ink = page.eval_on_selector(
        "#pad", "pad => pad.getContext('2d').getImageData(0, 0, pad.width, pad.height).data.some(v => v < 255)"
    )
    assert ink is False


def test_keyboard_undo_and_escape(page_factory: Callable[..., Any]) -> None:
    page = page_factory()
    draw(page, SEVEN)
    draw(page, [[(100, 300), (110, 310)]])
    wait_for_answer(page)
    page.keyboard.press("Control+z")  # removes the dot; the 7 remains
    page.wait_for_timeout(400)
    assert wait_for_answer(page) == "7"
    page.keyboard.press("Escape")
    assert page.get_attribute("#result", "data-state") == "empty"
    focused = []
    for _ in range(12):  # the controls are reachable by keyboard alone
        page.keyboard.press("Tab")
        focused.append(page.evaluate("document.activeElement.id"))
    assert {"undo", "clear", "upload"} <= set(focused)


@pytest.mark.parametrize("event", ["drop", "paste"])
def test_drop_and_paste_an_image(page_factory: Callable[..., Any], digit_png: Callable[[int], bytes],
                                 event: str) -> None:
    page = page_factory()
    page.evaluate(
        """([event, data]) => {
            const bytes = Uint8Array.from(atob(data), c => c.charCodeAt(0));
            const transfer = new DataTransfer();
            transfer.items.add(new File([bytes], "digit.png", {type: "image/png"}));
            const init = {bubbles: true, cancelable: true};
            const target = document.querySelector("#stage");
            target.dispatchEvent(event === "drop"
                ? new DragEvent("drop", {...init, dataTransfer: transfer})
                : new ClipboardEvent("paste", {...init, clipboardData: transfer}));
        }""",
        [event, base64.b64encode(digit_png(8)).decode()],
    )
    assert wait_for_answer(page) == "8"


@pytest.mark.parametrize("scheme", ["light", "dark"])
@pytest.mark.parametrize(
    ("name", "width", "height", "mobile"),
    [("laptop", 1366, 768, False), ("phone", 390, 844, True), ("phone-landscape", 844, 390, True),
     ("small-phone", 320, 568, True)],
)
def test_layout_screenshots(page_factory: Callable[..., Any], number_png: Callable[[str], bytes],
                            name: str, width: int, height: int, scheme: str, mobile: bool) -> None:
    """Every layout answers without overflowing sideways, with the whole canvas on the first screen;
    screenshots go to test-artifacts/screenshots/."""
    name = f"{name}-{scheme}"
    page = page_factory(width=width, height=height, color_scheme=scheme, mobile=mobile)
    stage = page.locator("#stage").bounding_box()
    assert stage["y"] + stage["height"] <= height
    footer_before = page.locator("footer").bounding_box()["y"]
    draw(page, SEVEN)
    assert wait_for_answer(page) == "7"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.wait_for_timeout(300)  # let the bars finish their transition
    page.screenshot(path=str(SCREENSHOTS / f"{name}-drawn.png"), full_page=True)
    if not mobile:  # an answer does not push the footer down (space is kept for it)
        assert page.locator("footer").bounding_box()["y"] == footer_before
    upload(page, number_png("315"), "number.png")
    assert wait_for_answer(page) == "315"
    page.wait_for_timeout(300)
    page.screenshot(path=str(SCREENSHOTS / f"{name}-number.png"), full_page=True)
    assert page.evaluate("document.documentElement.scrollWidth") <= width
    assert page.console_errors == []
