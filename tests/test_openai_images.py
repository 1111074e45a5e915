"""The ``openai`` repair tool against a loopback Images API, driven by the real ``openai`` client.

The server (tests/openai_server.py) parses the multipart form the client sends and answers in the
API's JSON, so these tests check what goes over the wire (model, size, mask alpha, prompt, images,
fields the model must not get) and what the tool makes of the answer (geometry, cost, retries,
errors). Pure helpers (sizes, masks, prices) are checked with exact values.
"""

from __future__ import annotations

import time

import numpy as np
import openai
import pytest

from tests.conftest import photo
from tests.openai_server import OpenAIImagesServer, invalid_request
from fixloop.tools.base import TOOLS, ModerationBlocked, RepairError, RepairRequest
from fixloop.tools.openai_images import (
    Geometry,
    Price,
    api_mask,
    call_cost,
    choose_size,
    edit_candidates,
    flexible_size_ok,
    from_request_image,
    load_prices,
    openai_edit,
    parse_size,
    plan_geometry,
    price_for,
    to_request_image,
    to_request_mask,
)

API_KEY = "sk-test-fixloop"
PROMPT = "Repair the hand inside the masked area: five fingers, natural joints; keep everything else as it is."


@pytest.fixture
def server(monkeypatch):
    with OpenAIImagesServer(api_key=API_KEY) as running:
        monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
        monkeypatch.setenv("OPENAI_BASE_URL", running.base_url)
        yield running


def rect_mask(shape, top, bottom, left, right):
    mask = np.zeros(shape[:2], dtype=bool)
    mask[top:bottom, left:right] = True
    return mask


# --- registry ------------------------------------------------------------------------------------


def test_registered_as_a_paid_tool():
    spec = TOOLS.get("openai")
    assert spec.function is openai_edit
    assert spec.paid is True
    assert spec.description.startswith("GPT Image edit")


# --- sizes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("input_size, expected", [
    ((640, 480), (944, 704)),  # small: grown to the 655,360-pixel floor, 4:3 kept
    ((848, 565), (1008, 672)),
    ((810, 1080), (816, 1088)),
    ((1024, 1024), (1024, 1024)),
    ((1280, 720), (1280, 720)),  # already valid: unchanged
    ((704, 1600), (704, 1600)),
    ((3840, 2160), (2560, 1440)),  # the default budget stops at the non-experimental 2560x1440
    ((5000, 1000), (3312, 1104)),  # 5:1 clamped to the 3:1 limit
    ((1000, 5000), (1104, 3312)),
])
def test_choose_size_gpt_image_2(input_size, expected):
    assert choose_size(*input_size) == expected


def test_choose_size_with_the_full_pixel_budget():
    assert choose_size(3840, 2160, max_pixels=8_294_400) == (3840, 2160)
    assert choose_size(6000, 4000, max_pixels=8_294_400) == (3520, 2352)
    assert choose_size(5000, 1000, max_pixels=8_294_400) == (3840, 1280)


def test_choose_size_is_always_valid_and_keeps_the_aspect():
    for width in range(50, 7000, 173):
        for height in range(50, 7000, 211):
            w, h = choose_size(width, height)
            assert flexible_size_ok(w, h, 2560 * 1440), (width, height, w, h)
            aspect = min(max(width / height, 1 / 3), 3)
            assert abs(np.log(w / h / aspect)) < 0.03, (width, height, w, h)


@pytest.mark.parametrize("model", ["gpt-image-1", "gpt-image-1.5", "gpt-image-1-mini", "some-compatible-model"])
def test_choose_size_fixed_models_pick_the_closest_aspect(model):
    assert choose_size(640, 480, model) == (1536, 1024)
    assert choose_size(810, 1080, model) == (1024, 1536)
    assert choose_size(900, 864, model) == (1024, 1024)
    assert choose_size(5000, 1000, model) == (1536, 1024)


def test_dated_snapshot_uses_its_base_model_rules():
    assert choose_size(640, 480, "gpt-image-2-2026-04-21") == (944, 704)


def test_parse_size_follows_the_model_rules():
    assert parse_size("1536x864", "gpt-image-2") == (1536, 864)
    assert parse_size("3840x2160", "gpt-image-2") == (3840, 2160)
    assert parse_size("auto", "gpt-image-1") is None
    assert parse_size("1536x1024", "gpt-image-1.5") == (1536, 1024)
    with pytest.raises(RepairError, match="multiples of 16"):
        parse_size("1000x1000", "gpt-image-2")
    with pytest.raises(RepairError, match="1:3..3:1"):
        parse_size("3840x1120", "gpt-image-2")
    with pytest.raises(RepairError, match="1024x1024, 1536x1024, 1024x1536 or auto"):
        parse_size("1536x864", "gpt-image-1")
    with pytest.raises(RepairError, match="WIDTHxHEIGHT"):
        parse_size("big", "gpt-image-2")


# --- masks and geometry (exact arrays) -----------------------------------------------------------


def test_api_mask_is_transparent_where_the_edit_may_happen():
    mask = np.array([[0, 1, 1],
                     [0, 0, 1]], dtype=bool)
    expected = np.zeros((2, 3, 4), dtype=np.uint8)
    expected[..., 3] = [[255, 0, 0],
                        [255, 255, 0]]
    np.testing.assert_array_equal(api_mask(mask), expected)


def test_request_mask_never_marks_padding_editable():
    geometry = Geometry(input_size=(3, 2), padded_size=(3, 4), offset=(0, 1), send_size=(3, 4), size_param="3x4")
    assert geometry.padding == (1, 1, 0, 0)
    mask = np.array([[1, 0, 0],
                     [1, 1, 0]], dtype=bool)
    expected = np.array([[0, 0, 0],
                         [1, 0, 0],
                         [1, 1, 0],
                         [0, 0, 0]], dtype=bool)
    np.testing.assert_array_equal(to_request_mask(mask, geometry), expected)


def test_request_mask_keeps_a_thin_line_when_shrinking():
    mask = np.zeros((64, 64), dtype=bool)
    mask[:, 33] = True  # one pixel wide
    geometry = Geometry((64, 64), (64, 64), (0, 0), (16, 16), "16x16")
    shrunk = to_request_mask(mask, geometry)
    np.testing.assert_array_equal(np.flatnonzero(shrunk.any(axis=0)), [8])
    assert shrunk[:, 8].all()


def test_padding_round_trip_is_exact_without_scaling():
    image = photo("hand_signing_01.jpg")  # 400 x 300
    geometry = plan_geometry(400, 300, (400, 400), 2560 * 1440)
    assert geometry.padded_size == (400, 400) and geometry.offset == (0, 50) and geometry.padding == (50, 50, 0, 0)
    sent = to_request_image(image, geometry)
    np.testing.assert_array_equal(sent[50:350], image)
    np.testing.assert_array_equal(sent[:50], np.repeat(image[:1], 50, axis=0))  # edge pixels, not black
    np.testing.assert_array_equal(from_request_image(sent, geometry), image)


# --- prices --------------------------------------------------------------------------------------


def test_shipped_price_table_and_snapshot_lookup():
    prices = load_prices()
    assert set(prices) >= {"gpt-image-2", "gpt-image-1.5", "gpt-image-1", "gpt-image-1-mini"}
    assert prices["gpt-image-2"] == Price(text_input=5.0, image_input=8.0, image_output=30.0, text_output=10.0)
    assert price_for("gpt-image-2-2026-04-21", prices) is prices["gpt-image-2"]
    assert price_for("gpt-image-1-mini-2025-10-06", prices) is prices["gpt-image-1-mini"]
    assert price_for("not-a-model", prices) is None


def test_call_cost_arithmetic():
    price = Price(text_input=5.0, image_input=8.0, image_output=30.0, text_output=10.0)
    usage = {"input_tokens": 1200, "input_tokens_details": {"text_tokens": 200, "image_tokens": 1000},
             "output_tokens": 4160, "total_tokens": 5360}
    assert call_cost(usage, price) == pytest.approx((200 * 5 + 1000 * 8 + 4160 * 30) / 1e6)
    usage["output_tokens_details"] = {"image_tokens": 4000, "text_tokens": 160}
    assert call_cost(usage, price) == pytest.approx((200 * 5 + 1000 * 8 + 4000 * 30 + 160 * 10) / 1e6)
    # no input details: all input priced at the image rate (an upper bound)
    assert call_cost({"input_tokens": 100, "output_tokens": 0}, price) == pytest.approx(100 * 8 / 1e6)


def test_price_override_file(tmp_path):
    override = tmp_path / "prices.toml"
    override.write_text('[prices."gpt-image-2"]\ntext_input = 1\nimage_input = 2\nimage_output = 3\n'
                        '[prices."my-endpoint-model"]\ntext_input = 0\nimage_input = 0\nimage_output = 50\n')
    prices = load_prices(override)
    assert prices["gpt-image-2"] == Price(1.0, 2.0, 3.0)
    assert prices["my-endpoint-model"].image_output == 50.0
    assert prices["gpt-image-1"].image_output == 40.0  # untouched rows stay
    bad = tmp_path / "bad.toml"
    bad.write_text('[prices."gpt-image-2"]\ntext_input = 1\nimage_input = 2\n')
    with pytest.raises(RepairError, match="missing keys \\['image_output'\\]"):
        load_prices(bad)
    bad.write_text('[gate]\nfail_on = []\n')
    with pytest.raises(RepairError, match="unknown top-level keys"):
        load_prices(bad)
    with pytest.raises(RepairError, match="does not exist"):
        load_prices(tmp_path / "missing.toml")


# --- the call on the wire ------------------------------------------------------------------------


def test_edit_request_on_the_wire_and_result(server):
    image = photo("hand_ok_01.jpg")  # 848 x 565
    original = image.copy()
    reference = photo("hand_thumbsup_02.jpg")  # 640 x 427
    mask = rect_mask(image.shape, 100, 300, 200, 500)
    server.usage = {"input_tokens": 1200, "input_tokens_details": {"text_tokens": 200, "image_tokens": 1000},
                    "output_tokens": 4160, "total_tokens": 5360}

    result = openai_edit(RepairRequest(image=image, mask=mask, references=[reference], prompt=PROMPT))

    # what the server received
    assert len(server.requests) == 1
    sent = server.requests[0]
    assert sent.path == "/v1/images/edits"
    assert sent.headers["authorization"] == f"Bearer {API_KEY}"
    assert sent.field("model") == "gpt-image-2"
    assert sent.field("size") == "1008x672"
    assert sent.field("prompt") == PROMPT
    assert sent.field("quality") == "low"
    assert sent.field("background") == "opaque"
    assert sent.field("output_format") == "png"
    assert sent.field("n") == "1"
    assert "input_fidelity" not in sent.fields  # gpt-image-2 answers it with a 400
    assert "output_compression" not in sent.fields
    assert [part.field for part in sent.images] == ["image[]", "image[]"]
    first, second = (part.decode() for part in sent.images)
    assert first.shape == (672, 1008, 3)
    assert second.shape == reference.shape
    np.testing.assert_array_equal(second, reference)  # PNG: the reference arrives unchanged
    alpha = sent.mask.decode()[..., 3]
    assert sent.mask.format == "PNG" and alpha.shape == (672, 1008)
    # every request pixel whose centre maps well inside the input mask is transparent, well outside opaque
    ys, xs = np.mgrid[0:672, 0:1008]
    iy, ix = (ys + 0.5) * 565 / 672 - 0.5, (xs + 0.5) * 848 / 1008 - 0.5
    inside = (iy > 101) & (iy < 298) & (ix > 201) & (ix < 498)
    outside = (iy < 98.5) | (iy > 300.5) | (ix < 198.5) | (ix > 500.5)
    assert (alpha[inside] == 0).all() and (alpha[outside] == 255).all()
    assert set(np.unique(alpha)) == {0, 255}

    # what the tool returned: input geometry, the edit inside the mask, cost from usage
    assert result.image.shape == image.shape and result.image.dtype == np.uint8
    np.testing.assert_array_equal(image, original)  # the input was not touched
    diff_to_input = np.abs(result.image.astype(int) - image.astype(int)).mean(axis=2)
    diff_to_inverse = np.abs(result.image.astype(int) - (255 - image.astype(int))).mean(axis=2)
    core = rect_mask(image.shape, 103, 297, 203, 497)
    far = ~rect_mask(image.shape, 97, 303, 197, 503)
    assert diff_to_inverse[core].mean() < 4 and diff_to_input[far].mean() < 4
    assert diff_to_input[core].mean() > 60
    assert result.tool == "openai"
    np.testing.assert_array_equal(result.mask, mask)
    assert result.cost_usd == pytest.approx((200 * 5 + 1000 * 8 + 4160 * 30) / 1e6)  # 0.1338 USD
    assert result.parameters["usage"]["output_tokens"] == 4160 and result.parameters["cost_known"] is True
    assert result.parameters["attempts"] == 1
    assert result.parameters["size"] == "1008x672" and result.parameters["references"] == 1
    assert result.parameters["base_url"].startswith(server.base_url)
    assert API_KEY not in repr(result.parameters)
    assert result.seconds > 0


def test_older_model_final_render_pads_and_brings_any_size_back(server):
    image = photo("hand_thumbsup_01.jpg")  # 640 x 521: padded to 3:2 for 1536x1024
    server.image = np.full((1024, 1024, 3), 77, dtype=np.uint8)  # an endpoint that ignores the size
    mask = rect_mask(image.shape, 200, 400, 100, 300)

    result = openai_edit(RepairRequest(image=image, mask=mask, prompt=PROMPT,
                                       parameters={"model": "gpt-image-1.5", "final": True}))

    sent = server.requests[0]
    assert sent.field("model") == "gpt-image-1.5"
    assert sent.field("size") == "1536x1024"
    assert sent.field("quality") == "high"
    assert sent.field("input_fidelity") == "high"  # accepted by gpt-image-1.5
    assert [part.field for part in sent.images] == ["image"]  # one image: the plain field name
    assert sent.images[0].decode().shape == (1024, 1536, 3)
    top, bottom, left, right = result.parameters["padding"]
    assert (top, bottom) == (0, 0) and left + right == 782 - 640 and abs(left - right) <= 1
    alpha = sent.mask.decode()[..., 3]
    pad_px = int(left * 1536 / 782)
    assert (alpha[:, :pad_px] == 255).all() and (alpha[:, -pad_px:] == 255).all()
    assert result.image.shape == image.shape
    assert (result.image == 77).all()
    assert result.parameters["input_fidelity"] == "high"
    assert any("padded" in note for note in result.notes)


def test_input_fidelity_is_never_sent_to_gpt_image_2(server):
    image = photo("hand_signing_01.jpg")
    result = openai_edit(RepairRequest(image=image, prompt=PROMPT, parameters={"input_fidelity": "high"}))
    assert "input_fidelity" not in server.requests[0].fields
    assert server.requests[0].mask is None  # no mask: the whole image may change
    assert any("input_fidelity not sent" in note for note in result.notes)
    # the loopback server rejects it the way the API does, so the omission is what made the call pass
    client = openai.OpenAI(base_url=server.base_url, api_key=API_KEY, max_retries=0)
    with pytest.raises(openai.BadRequestError) as caught:
        client.images.edit(image=("i.png", server.requests[0].images[0].data, "image/png"), prompt="x",
                           model="gpt-image-2", input_fidelity="high")
    assert caught.value.param == "input_fidelity"


def test_jpeg_output_with_compression(server):
    image = photo("hand_trumpet_01.jpg")
    result = openai_edit(RepairRequest(image=image, prompt=PROMPT,
                                       parameters={"output_format": "jpeg", "output_compression": 80}))
    sent = server.requests[0]
    assert sent.field("output_format") == "jpeg" and sent.field("output_compression") == "80"
    assert result.image.shape == image.shape
    assert result.parameters["output_compression"] == 80


def test_n_candidates_all_come_back_at_the_input_geometry(server):
    image = photo("hand_signing_01.jpg")
    result, candidates = edit_candidates(RepairRequest(image=image, prompt=PROMPT, parameters={"n": 3}))
    assert server.requests[0].field("n") == "3"
    assert len(candidates) == 3 and all(c.shape == image.shape for c in candidates)
    np.testing.assert_array_equal(result.image, candidates[0])


def test_missing_usage_reports_unknown_cost(server):
    server.include_usage = False
    result = openai_edit(RepairRequest(image=photo("hand_signing_01.jpg"), prompt=PROMPT))
    assert result.cost_usd == 0.0 and result.parameters["cost_known"] is False
    assert any("no usage block" in note for note in result.notes)


def test_api_key_parameter_and_price_override(server, monkeypatch, tmp_path):
    monkeypatch.delenv("OPENAI_API_KEY")
    prices = tmp_path / "prices.toml"
    prices.write_text('[prices."gpt-image-2"]\ntext_input = 0\nimage_input = 0\nimage_output = 1000\n')
    result = openai_edit(RepairRequest(image=photo("hand_signing_01.jpg"), prompt=PROMPT,
                                       parameters={"api_key": API_KEY, "prices": str(prices)}))
    assert server.requests[0].headers["authorization"] == f"Bearer {API_KEY}"
    assert result.cost_usd == pytest.approx(272 * 1000 / 1e6)  # the server's default 272 output tokens
    assert API_KEY not in repr(result.parameters)


# --- retries and errors --------------------------------------------------------------------------


def test_rate_limit_is_retried_by_the_client(server):
    server.queue(429)
    started = time.perf_counter()
    result = openai_edit(RepairRequest(image=photo("hand_signing_01.jpg"), prompt=PROMPT))
    assert server.statuses == [429, 200]
    assert result.parameters["attempts"] == 2
    assert time.perf_counter() - started < 10  # retry-after-ms: 1 is honoured


def test_server_errors_are_retried_by_the_client(server):
    server.queue(500, 503)
    result = openai_edit(RepairRequest(image=photo("hand_signing_01.jpg"), prompt=PROMPT))
    assert server.statuses == [500, 503, 200]
    assert result.parameters["attempts"] == 3


def test_retries_run_out_with_a_one_line_error(server):
    server.queue(429, 429, 429)
    with pytest.raises(RepairError) as caught:
        openai_edit(RepairRequest(image=photo("hand_signing_01.jpg"), prompt=PROMPT, parameters={"max_retries": 2}))
    assert not isinstance(caught.value, ModerationBlocked)
    assert "rate limited" in str(caught.value) and "3 attempts" in str(caught.value)
    assert "\n" not in str(caught.value)
    assert server.statuses == [429, 429, 429]


def test_moderation_blocked_is_not_retried(server):
    server.queue(400)
    with pytest.raises(ModerationBlocked) as caught:
        openai_edit(RepairRequest(image=photo("hand_signing_01.jpg"), prompt=PROMPT, parameters={"max_retries": 3}))
    message = str(caught.value)
    assert "moderation_blocked" in message and "violence" in message and "not retried" in message
    assert "\n" not in message
    assert server.statuses == [400]


def test_other_api_errors_are_one_line_repair_errors(server):
    server.queue(invalid_request("Invalid value for 'quality'.\nSee the docs.", "quality", "invalid_value"))
    with pytest.raises(RepairError) as caught:
        openai_edit(RepairRequest(image=photo("hand_signing_01.jpg"), prompt=PROMPT))
    assert not isinstance(caught.value, ModerationBlocked)
    assert "HTTP 400 invalid_value: Invalid value for 'quality'. See the docs." in str(caught.value)
    assert "\n" not in str(caught.value)
    assert len(server.requests) == 1


def test_rejected_key_is_a_clear_error(server, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-wrong")
    with pytest.raises(RepairError, match="rejected the API key"):
        openai_edit(RepairRequest(image=photo("hand_signing_01.jpg"), prompt=PROMPT))
    assert server.statuses == [401]  # 401 is not retried


def test_missing_key_fails_before_any_work(server, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY")
    with pytest.raises(RepairError, match="OPENAI_API_KEY"):
        openai_edit(RepairRequest(image=photo("hand_signing_01.jpg"), prompt=PROMPT))
    assert server.requests == []


@pytest.mark.parametrize("change, message", [
    ({"prompt": None}, "needs a prompt"),
    ({"prompt": "   "}, "needs a prompt"),
    ({"mask": np.ones((10, 10), dtype=bool)}, "export the mask at the image's size"),
    ({"mask": np.zeros((300, 400), dtype=bool)}, "mask is empty"),
    ({"parameters": {"strenght": 0.3}}, "unknown parameter 'strenght'"),
    ({"parameters": {"quality": "ultra"}}, "parameter quality"),
    ({"parameters": {"output_compression": 80}}, "jpeg and webp only"),
    ({"parameters": {"background": "transparent"}}, "parameter background"),
    ({"parameters": {"size": "1000x1000"}}, "multiples of 16"),
    ({"parameters": {"model": "gpt-image-1", "size": "1536x864"}}, "not valid for gpt-image-1"),
    ({"parameters": {"n": 11}}, "parameter n"),
    ({"references": [np.zeros((8, 8), dtype=np.uint8)]}, "reference 1 must be"),
])
def test_bad_inputs_fail_before_any_request(server, change, message):
    fields = {"image": photo("hand_signing_01.jpg"), "prompt": PROMPT}
    fields.update(change)
    with pytest.raises(RepairError, match=message):
        openai_edit(RepairRequest(**fields))
    assert server.requests == []


def test_unreachable_endpoint_is_a_clear_error(monkeypatch):
    with OpenAIImagesServer() as stopped:
        base_url = stopped.base_url
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", base_url)
    with pytest.raises(RepairError, match="cannot reach"):
        openai_edit(RepairRequest(image=photo("hand_signing_01.jpg"), prompt=PROMPT, parameters={"max_retries": 0}))
