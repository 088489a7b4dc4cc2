"""The page in headless Chromium, issue 13: drawing after an upload, phones in landscape, pinch, big photos,
offline /docs, SVG, keyboard focus, accessibility (axe-core), and the page's answers to awkward input."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import cv2
import numpy as np
import pytest
from PIL import Image
from test_page_browser import SEVEN, draw, upload, wait_for_answer, write

pytestmark = pytest.mark.browser

AXE = Path(__file__).parent / "vendor" / "axe-4.14.1.min.js"


def canvas_to_viewport(page: Any, x: float, y: float) -> tuple[float, float]:
    box = page.locator("#pad").bounding_box()
    return box["x"] + x * box["width"] / 600, box["y"] + y * box["height"] / 360


def has_ink(page: Any) -> bool:
    """Whether the model's copy of the drawing (black on white) has any dark pixel."""
    return page.evaluate("""() => new Promise(resolve => {
        const pad = document.querySelector('#pad');
        const data = pad.getContext('2d').getImageData(0, 0, pad.width, pad.height).data;
        const paper = data.slice(0, 4).join();
        for (let i = 0; i < data.length; i += 4) {
            if (data.slice(i, i + 4).join() !== paper) return resolve(true);
        }
        resolve(false);
    })""")


def test_drawing_after_an_upload_replaces_it(page_factory: Callable[..., Any],
                                             digit_png: Callable[[int], bytes]) -> None:
    page = page_factory()
    upload(page, digit_png(2))
    assert wait_for_answer(page) == "2"
    assert page.is_visible("#draw")  # the explicit way back to drawing
    draw(page, SEVEN)  # straight over the preview
    page.wait_for_function("() => document.querySelector('#answer').textContent === '7'", timeout=10_000)
    assert not page.is_visible("#preview")
    assert not page.is_visible("#draw")
    assert page.console_errors == []


def test_draw_instead_button_brings_the_canvas_back(page_factory: Callable[..., Any],
                                                    digit_png: Callable[[int], bytes]) -> None:
    page = page_factory()
    upload(page, digit_png(4))
    wait_for_answer(page)
    page.click("#draw")
    assert not page.is_visible("#preview")
    assert page.get_attribute("#result", "data-state") == "empty"
    draw(page, SEVEN)
    assert wait_for_answer(page) == "7"


def test_landscape_phone_fits_and_scrolls(page_factory: Callable[..., Any]) -> None:
    page = page_factory(width=844, height=390, mobile=True)
    stage = page.locator("#stage").bounding_box()
    assert stage["y"] + stage["height"] <= 390, "the canvas runs past the bottom of the screen"
    answer = page.locator("#result").bounding_box()
    assert answer["y"] + 40 <= 390, "the answer is not on the first screen beside the canvas"
    assert page.evaluate("document.documentElement.scrollWidth") <= 844
    # A swipe beside the canvas scrolls the page (the canvas keeps every touch for ink).
    assert stage["x"] >= 40, "no margin left to scroll the page with"
    cdp = page.context.new_cdp_session(page)
    assert swipe_up(cdp, page, stage["x"] + stage["width"] / 2, 300) == 0  # on the canvas a swipe is ink
    assert swipe_up(cdp, page, stage["x"] / 2, 300) > 100
    page.locator("#upload").scroll_into_view_if_needed()
    assert page.locator("#upload").is_visible()
    # And it draws with a finger (the swipe on the canvas above was a stroke: clear it first).
    page.click("#clear")
    page.evaluate("window.scrollTo(0, 0)")
    touch_stroke(cdp, page, [[(230, 80), (300, 80), (370, 80), (345, 150), (318, 220), (295, 290)]])
    assert wait_for_answer(page) == "7"


def swipe_up(cdp: Any, page: Any, x: float, y: float) -> float:
    """Swipe a finger 200 px up from (x, y) in the viewport, from the top of the page; the page's scrollY after."""
    page.evaluate("window.scrollTo(0, 0)")
    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": x, "y": y}]})
    for step in range(1, 11):
        cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": x, "y": y - 20 * step}]})
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    page.wait_for_timeout(200)
    return float(page.evaluate("window.scrollY"))


def touch_stroke(cdp: Any, page: Any, fingers: list[list[tuple[float, float]]]) -> None:
    """Move one or more fingers along their paths at once (canvas coordinates), via real touch events."""

    def points(step: int) -> list[dict[str, float]]:
        return [dict(zip(("x", "y"), canvas_to_viewport(page, *path[min(step, len(path) - 1)]), strict=True),
                     id=finger) for finger, path in enumerate(fingers)]

    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": points(0)[:1]})
    if len(fingers) > 1:  # the second finger lands a moment later, as in a real pinch
        cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": points(0)})
    for step in range(1, max(len(path) for path in fingers)):
        cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": points(step)})
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})


def test_pinch_draws_nothing(page_factory: Callable[..., Any]) -> None:
    page = page_factory(width=390, height=844, mobile=True)
    cdp = page.context.new_cdp_session(page)
    touch_stroke(cdp, page, [[(250, 150), (220, 120), (190, 90), (160, 60)],
                             [(350, 200), (380, 230), (410, 260), (440, 290)]])
    page.wait_for_timeout(700)  # longer than the page waits before it asks the server
    assert not has_ink(page)
    assert page.get_attribute("#result", "data-state") == "empty"
    touch_stroke(cdp, page, SEVEN)  # one finger still draws
    assert wait_for_answer(page) == "7"


def phone_photo(digit: np.ndarray) -> bytes:
    """A 48 MP (8000x6000) JPEG of paper with a digit, stored sideways with EXIF orientation 6 (rotate 90° to
    view), as phones save portrait shots: read upright only if the browser applies the EXIF rotation. It is
    ~1.8 MB, under the size at which the page decodes every file: its JPEG header has to give it away."""
    height, width = 6000, 8000
    rng = np.random.default_rng(7)
    paper = (222 + rng.integers(-4, 5, (height // 8, width // 8), dtype=np.int16)).astype(np.uint8)
    paper = cv2.resize(paper, (width, height), interpolation=cv2.INTER_LINEAR)
    upright = np.full((width // 2, height // 2), 255, np.uint8)  # viewed upright: 3000 wide, 4000 tall
    ink = cv2.resize(digit, (1800, 1800), interpolation=cv2.INTER_CUBIC)
    upright[1100:2900, 600:2400] = 255 - ink
    sideways = cv2.rotate(upright, cv2.ROTATE_90_COUNTERCLOCKWISE)  # EXIF 6 turns it back clockwise
    sideways = cv2.resize(sideways, (width, height), interpolation=cv2.INTER_LINEAR)
    image = Image.fromarray(np.minimum(paper, sideways)).convert("RGB")
    exif = Image.Exif()
    exif[0x0112] = 6
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=80, exif=exif.tobytes())
    return buffer.getvalue()


def test_48_megapixel_photo_is_shrunk_upright_in_the_browser(page_factory: Callable[..., Any],
                                                             mnist_digits: dict[int, np.ndarray]) -> None:
    photo = phone_photo(mnist_digits[7])
    page = page_factory()
    sent: list[int] = []
    page.on("request", lambda request: request.url.endswith("images=true") and sent.append(
        len(request.post_data_buffer or b"")))
    with page.expect_response(lambda response: "/api/v1/predict" in response.url and response.ok,
                              timeout=30_000) as answered:
        page.set_input_files("#file", files=[{"name": "PXL_48MP.jpg", "mimeType": "image/jpeg", "buffer": photo}])
    body = answered.value.json()
    assert body["width"] * body["height"] <= 4_000_000
    assert body["height"] > body["width"], "EXIF orientation was lost: the photo is still sideways"
    assert wait_for_answer(page) == "7"
    assert len(sent) == 1 and sent[0] < len(photo)  # shrunk before the first try, not after a 413


def test_docs_render_offline(browser: Any, live_server: str) -> None:
    """/docs draws the API's operations with every request answered by this server, none elsewhere."""
    context = browser.new_context()
    elsewhere: list[str] = []
    host = urlsplit(live_server).netloc

    def only_here(route: Any) -> None:
        if urlsplit(route.request.url).netloc == host:
            route.continue_()
        else:
            elsewhere.append(route.request.url)
            route.abort()

    context.route("**/*", only_here)
    page = context.new_page()
    errors: list[str] = []
    page.on("console", lambda message: message.type == "error" and errors.append(message.text))
    try:
        page.goto(live_server + "/docs")
        page.wait_for_selector(".swagger-ui .opblock-summary-path", timeout=15_000)
        paths = page.locator(".swagger-ui .opblock-summary-path").all_text_contents()
        assert any("/api/v1/predict" in path for path in paths)
        assert errors == []
        page.goto(live_server + "/redoc")
        page.get_by_text("/api/v1/predict").first.wait_for(timeout=15_000)
    finally:
        context.close()
    assert elsewhere == []
    # ReDoc's "powered by" logo points at its CDN: the docs CSP stops it before any request is made.
    assert all("Content Security Policy" in error and "redoc" in error for error in errors)


def test_svg_upload_says_svg_is_not_supported(page_factory: Callable[..., Any]) -> None:
    page = page_factory()
    svg = (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="100" height="100">'
           b'<path d="M20 20 H80 L40 90" stroke="black" stroke-width="8" fill="none"/></svg>')
    page.set_input_files("#file", files=[{"name": "seven.svg", "mimeType": "image/svg+xml", "buffer": svg}])
    wait_for_answer(page)
    assert page.get_attribute("#result", "data-state") == "error"
    assert "SVG drawings aren't supported: export a PNG" in page.text_content("#verdict")


def test_keyboard_focus_ring_on_the_canvas_is_visible(page_factory: Callable[..., Any]) -> None:
    page = page_factory()
    box = page.locator("#stage").bounding_box()
    clip = {"x": box["x"] - 8, "y": box["y"] - 8, "width": box["width"] + 16, "height": box["height"] + 16}
    before = page.screenshot(clip=clip)
    for _ in range(10):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.id") == "pad":
            break
    assert page.evaluate("document.activeElement.id") == "pad"
    after = page.screenshot(clip=clip)
    focus = np.array(cv2.imdecode(np.frombuffer(after, np.uint8), cv2.IMREAD_COLOR), np.int16)
    plain = np.array(cv2.imdecode(np.frombuffer(before, np.uint8), cv2.IMREAD_COLOR), np.int16)
    changed = np.abs(focus - plain).max(axis=2) > 60  # (h, w): pixels the focus ring painted
    # The ring runs around the whole canvas, outside its rounded box: all four sides show it.
    height, width = changed.shape
    sides = [changed[:8].any(axis=0).mean(), changed[-8:].any(axis=0).mean(),
             changed[:, :8].any(axis=1).mean(), changed[:, -8:].any(axis=1).mean()]
    assert min(sides) > 0.8, f"focus ring missing on a side: {sides} of {width}x{height}"


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_accessibility_axe_finds_no_violations(page_factory: Callable[..., Any],
                                               number_png: Callable[[str], bytes], scheme: str) -> None:
    page = page_factory(color_scheme=scheme)
    page.evaluate(AXE.read_text("utf-8"))  # through DevTools: the page's CSP rightly forbids inline scripts

    def violations() -> list[str]:
        found = page.evaluate("""async () => (await axe.run(document, {resultTypes: ['violations']}))
            .violations.map(v => `${v.id}: ${v.nodes.map(n => n.target.join(' ')).join(', ')}`)""")
        return list(found)

    assert violations() == []
    upload(page, number_png("315"), "number.png")
    wait_for_answer(page)
    page.wait_for_timeout(300)  # colour transitions settle before contrast is measured
    assert violations() == []
    tree = page.locator("body").aria_snapshot()
    assert 'img "Drawing area' in tree  # the canvas is announced with its label
    assert "Answer: 315" in tree
    assert "Choose File" not in tree


def test_small_things(page_factory: Callable[..., Any]) -> None:
    """Bars say "–" before anything is read; the timing line names what Auto chose; a digit drawn at the top
    edge keeps its label off the ink; phones are not told to press Ctrl+V."""
    page = page_factory()
    assert set(page.locator("#bars .bar-value").all_text_contents()) == {"–"}
    draw(page, [[(x, y - 70) for x, y in stroke] for stroke in SEVEN])  # the 7's top bar at y = 10
    assert wait_for_answer(page) == "7"
    assert "auto → digit" in page.text_content("#timing")
    label, box = (page.locator(f"#boxes {kind}").bounding_box() for kind in ("text", "rect"))
    overlap_x = min(label["x"] + label["width"], box["x"] + box["width"]) - max(label["x"], box["x"])
    overlap_y = min(label["y"] + label["height"], box["y"] + box["height"]) - max(label["y"], box["y"])
    assert overlap_x <= 1 or overlap_y <= 1, f"the label {label} sits on the digit {box}"
    phone = page_factory(width=390, height=844, mobile=True)
    assert not phone.is_visible(".paste-hint")
    assert page.is_visible(".paste-hint")


def test_mac_users_see_the_command_key(page_factory: Callable[..., Any]) -> None:
    page = page_factory()
    assert set(page.locator("kbd.mod").all_text_contents()) == {"Ctrl"}
    cdp = page.context.new_cdp_session(page)
    cdp.send("Emulation.setUserAgentOverride", {
        "userAgent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/537.36 (KHTML, like Gecko)",
        "platform": "MacIntel",
        "userAgentMetadata": {"platform": "macOS", "platformVersion": "14.5", "architecture": "arm",
                              "model": "", "mobile": False},
    })
    page.reload()
    assert set(page.locator("kbd.mod").all_text_contents()) == {"⌘"}


def pen_width(page: Any) -> float:
    return float(page.evaluate("() => document.querySelector('#pad').getContext('2d').lineWidth"))


def test_a_number_written_small_with_normal_gaps_is_not_one_blob(page_factory: Callable[..., Any]) -> None:
    """"2026" about 70 canvas px tall, gaps a quarter of that: the old 24 px pen made one blob of it."""
    page = page_factory()
    draw(page, write("2026", 170, 140, 70, 18))
    assert wait_for_answer(page) == "2026"
    assert pen_width(page) < 10  # the pen followed the writing's size
