"""The drawing page in Chromium: mouse and touch drawing, live predictions, the histogram, the empty
canvas, Clear and Undo, compare mode, feedback and the random MNIST digit."""
from __future__ import annotations

import pytest

pytest.importorskip("playwright")
from playwright.sync_api import Page, expect  # noqa: E402

from tests.support.drawings import ONE, SEVEN  # noqa: E402

SIZE = 280  # the canvas's own coordinate system (CSS px at full size)


def canvas_to_page(page: Page, points):
    """Canvas coordinates (0..280) -> page coordinates, whatever size the canvas is shown at."""
    box = page.get_by_test_id("canvas").bounding_box()
    return [(box["x"] + x * box["width"] / SIZE, box["y"] + y * box["height"] / SIZE) for x, y in points]


def draw_with_mouse(page: Page, points, *, steps: int = 10) -> None:
    path = canvas_to_page(page, points)
    page.mouse.move(*path[0])
    page.mouse.down()
    for x, y in path[1:]:
        page.mouse.move(x, y, steps=steps)
    page.mouse.up()


def draw_with_touch(page: Page, points, *, steps: int = 10) -> None:
    """A one-finger stroke through the DevTools protocol, as a touch screen sends it."""
    path = canvas_to_page(page, points)
    cdp = page.context.new_cdp_session(page)
    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": path[0][0], "y": path[0][1]}]})
    for (x0, y0), (x1, y1) in zip(path, path[1:]):
        for i in range(1, steps + 1):
            x, y = x0 + (x1 - x0) * i / steps, y0 + (y1 - y0) * i / steps
            cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": x, "y": y}]})
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    cdp.detach()


def bar_values(page: Page, container: str = '[data-testid="probabilities"]') -> list[float]:
    return page.eval_on_selector(
        container, "el => [...el.querySelectorAll('[data-testid^=\"prob-\"]')].map(bar => Number(bar.dataset.value))"
    )


def ink_pixels(page: Page) -> int:
    return page.eval_on_selector(
        '[data-testid="canvas"]',
        """canvas => {
            const data = canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
            let inked = 0;
            for (let i = 3; i < data.length; i += 4) if (data[i] > 0) inked += 1;
            return inked;
        }""",
    )


def draw_and_wait(page: Page, points, digit: str) -> None:
    draw_with_mouse(page, points)
    expect(page.get_by_test_id("prediction")).to_have_text(digit)


def test_mouse_drawings_are_recognised_with_a_full_histogram(page: Page):
    draw_and_wait(page, ONE, "1")
    values = bar_values(page)
    assert len(values) == 10
    assert sum(values) == pytest.approx(1.0, abs=1e-3)
    assert max(range(10), key=values.__getitem__) == 1
    expect(page.locator('[data-testid="probabilities"] .bar.top')).to_have_attribute("data-testid", "prob-1")
    expect(page.get_by_test_id("preprocessed")).to_be_visible()
    expect(page.get_by_test_id("model-name")).not_to_have_text("–")
    expect(page.get_by_test_id("latency")).to_contain_text("ms")

    page.get_by_test_id("clear").click()
    draw_and_wait(page, SEVEN, "7")
    assert sum(bar_values(page)) == pytest.approx(1.0, abs=1e-3)
    assert page.js_errors == []


def test_touch_drawing_gets_a_prediction(touch_page: Page):
    draw_with_touch(touch_page, ONE)

    expect(touch_page.get_by_test_id("prediction")).to_have_text("1")
    assert ink_pixels(touch_page) > 0
    assert touch_page.js_errors == []


def test_predict_on_an_empty_canvas_explains_instead_of_calling_the_api(page: Page):
    requests = []
    page.on("request", lambda request: "/api/" in request.url and requests.append(request.url))

    page.get_by_test_id("predict").click()

    expect(page.get_by_test_id("empty-message")).to_be_visible()
    expect(page.get_by_test_id("empty-message")).to_contain_text("Draw a digit first")
    expect(page.get_by_test_id("error-message")).to_be_hidden()
    expect(page.get_by_test_id("prediction")).to_have_text("")
    assert requests == []


def test_an_empty_drawing_answer_from_the_server_shows_the_empty_message(page: Page):
    # An 18 px pen always leaves enough ink, so the server's answer to a near-empty image is staged.
    body = {"error": {"code": "empty_drawing", "message": "the drawing is empty", "detail": None}}
    page.route("**/api/predict/", lambda route: route.fulfill(status=422, json=body))

    with page.expect_response("**/api/predict/"):
        draw_with_mouse(page, [(140, 140), (141, 140)], steps=1)

    expect(page.get_by_test_id("empty-message")).to_be_visible()
    expect(page.get_by_test_id("error-message")).to_be_hidden()
    expect(page.get_by_test_id("prediction")).to_have_text("")


def test_answers_that_are_not_the_error_shape_and_a_lost_connection_are_explained(page: Page):
    page.route("**/api/predict/", lambda route: route.fulfill(status=502, body="<h1>Bad gateway</h1>",
                                                              content_type="text/html"))
    with page.expect_response("**/api/predict/"):
        draw_with_mouse(page, SEVEN)
    expect(page.get_by_test_id("error-message")).to_have_text("The server answered 502 Bad Gateway.")

    page.unroute("**/api/predict/")
    page.route("**/api/predict/", lambda route: route.abort("connectionrefused"))
    page.get_by_test_id("predict").click()
    expect(page.get_by_test_id("error-message")).to_contain_text("The server could not be reached")
    expect(page.get_by_test_id("prediction")).to_have_text("")


def test_clear_empties_the_canvas_and_resets_the_result(page: Page):
    draw_and_wait(page, SEVEN, "7")
    assert ink_pixels(page) > 0

    page.get_by_test_id("clear").click()

    assert ink_pixels(page) == 0
    expect(page.get_by_test_id("prediction")).to_have_text("")
    expect(page.get_by_test_id("feedback")).to_be_hidden()
    expect(page.get_by_test_id("preprocessed")).to_be_hidden()
    assert bar_values(page) == [0.0] * 10


def test_undo_removes_the_last_stroke(page: Page):
    draw_and_wait(page, ONE, "1")
    one_only = ink_pixels(page)
    draw_with_mouse(page, [(60, 250), (220, 250)])
    assert ink_pixels(page) > one_only

    page.get_by_test_id("undo").click()

    assert ink_pixels(page) == one_only
    expect(page.get_by_test_id("prediction")).to_have_text("1")
    page.get_by_test_id("undo").click()
    assert ink_pixels(page) == 0
    expect(page.get_by_test_id("prediction")).to_have_text("")


def test_compare_mode_shows_every_model_side_by_side(page: Page):
    page.get_by_test_id("compare-toggle").check()
    draw_and_wait(page, SEVEN, "7")

    histograms = page.get_by_test_id("compare-histogram")
    expect(page.get_by_test_id("compare")).to_be_visible()
    expect(histograms.first).to_be_visible()
    assert histograms.count() >= 2
    for i in range(histograms.count()):
        values = histograms.nth(i).evaluate("el => [...el.querySelectorAll('.bar')].map(b => Number(b.dataset.value))")
        assert len(values) == 10 and sum(values) == pytest.approx(1.0, abs=1e-3)

    page.get_by_test_id("compare-toggle").uncheck()
    expect(page.get_by_test_id("compare")).to_be_hidden()


def test_feedback_labels_the_prediction(page: Page):
    draw_and_wait(page, ONE, "1")
    feedback = page.get_by_test_id("feedback")
    expect(feedback).to_be_visible()

    with page.expect_response("**/api/predictions/*/label/") as answer:
        feedback.get_by_role("button", name="It was a 4").click()

    assert answer.value.status == 200
    assert answer.value.json()["label"] == 4
    expect(page.get_by_test_id("feedback-status")).to_contain_text("Thanks")
    expect(feedback.get_by_role("button", name="It was a 4")).to_have_attribute("aria-pressed", "true")

    feedback.get_by_role("button", name="Right").click()
    expect(page.get_by_test_id("feedback-status")).to_contain_text("as the model said")


def test_random_mnist_digit_shows_the_digit_or_why_not(page: Page):
    with page.expect_response("**/api/mnist/random/") as answer:
        page.get_by_test_id("random-digit").click()

    if answer.value.status == 200:
        body = answer.value.json()
        expect(page.get_by_test_id("random-info")).to_contain_text(f"true label {body['label']}")
        expect(page.get_by_test_id("prediction")).to_have_text(str(body["prediction"]["digit"]))
        expect(page.get_by_test_id("preprocessed")).to_be_visible()
        expect(page.get_by_test_id("feedback")).to_be_hidden()
    else:
        assert answer.value.status == 503
        expect(page.get_by_test_id("error-message")).to_have_text(answer.value.json()["error"]["message"])
    assert page.js_errors == []
