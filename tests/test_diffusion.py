"""tools/diffusion.py: diffusers inpaint / img2img with ControlNet and IP-Adapter.

The pipelines are tiny, randomly initialised and saved to disk once per module (tests/tiny_pipelines.py);
the tool loads them from those folders exactly as it loads a downloaded checkpoint and runs 2 steps at
64 px on the CPU. Random weights make noise, so the tests assert on what does not depend on weights:
geometry, determinism, the mask guarantee, and that each input (seed, control map, reference) reaches
the output.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

pytest.importorskip("diffusers")

from tests.conftest import photo  # noqa: E402
from tests.tiny_pipelines import IP_ADAPTER_WEIGHT, build_tiny_models, tiny_tokenizer  # noqa: E402
from fixloop.tools.base import TOOLS, RepairError, RepairRequest  # noqa: E402
from fixloop.tools import diffusion  # noqa: E402
from fixloop.tools.diffusion import (  # noqa: E402
    DiffusionSettings,
    clear_pipeline_cache,
    control_map,
    control_source,
    diffusion_repair,
    draw_openpose,
    has_ip_adapter,
    load_pipeline,
    openpose_keypoints,
    pipeline_arguments,
    pose_landmarks,
    working_size,
)
from fixloop.tools.masks import crop_box, default_feather  # noqa: E402

PHOTO = "body_skier_01.jpg"  # 640 x 425, one person in full view


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    import torch

    # Tiny models gain nothing from intra-op threads, and on a busy 2-core machine OpenMP's spinning
    # workers made this module 3-6x slower from run to run; one thread keeps it steady.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    paths = build_tiny_models(tmp_path_factory.mktemp("tiny-sd"))
    yield paths
    clear_pipeline_cache()
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    """The skier at 80 x 53: the height is no multiple of 8, so the way back to the input's geometry counts."""
    return cv2.resize(photo(PHOTO), (80, 53), interpolation=cv2.INTER_AREA)


@pytest.fixture(scope="module")
def box_mask() -> np.ndarray:
    mask = np.zeros((53, 80), dtype=bool)
    mask[12:40, 20:60] = True
    return mask


def run(image, models, mask=None, references=(), **parameters):
    settings = {"model": str(models.base), "steps": 2, "strength": 1.0, "guidance": 5.0, "seed": 0}
    settings.update(parameters)
    request = RepairRequest(image=image, mask=mask, prompt="a photo of a person, sharp detail",
                            negative_prompt="blurry", references=list(references), parameters=settings)
    return diffusion_repair(request)


def test_registered_as_a_free_tool():
    spec = TOOLS.get("diffusers")
    assert spec.function is diffusion_repair and spec.paid is False


def test_tiny_tokenizer_really_tokenizes(models):
    from transformers import CLIPTokenizer

    for tokenizer in (tiny_tokenizer(), CLIPTokenizer.from_pretrained(str(models.base / "tokenizer"))):
        ids = tokenizer("a photo of a hand").input_ids
        assert ids[0] == 0 and ids[-1] == 1 and len(ids) == 7  # BOS, five whole words, EOS
        assert len(tokenizer("zebra").input_ids) > 2  # an unknown word falls back to byte pieces


@pytest.mark.parametrize("which", ["base", "inpaint"])
def test_inpaint_keeps_geometry_and_every_pixel_outside_the_mask(models, scene, box_mask, which):
    image, mask = scene.copy(), box_mask.copy()
    result = run(image, models, mask=mask, model=str(getattr(models, which)))
    assert result.image.shape == scene.shape and result.image.dtype == np.uint8
    assert np.array_equal(result.image[~box_mask], scene[~box_mask])  # the hard guarantee
    changed = np.abs(result.image.astype(int) - scene).max(axis=2) > 0
    assert changed[box_mask].mean() > 0.5
    assert np.array_equal(image, scene) and np.array_equal(mask, box_mask)  # inputs untouched
    assert np.array_equal(result.mask, box_mask)
    assert result.tool == "diffusers" and result.cost_usd == 0.0 and result.seconds > 0
    expected_class = "StableDiffusionInpaintPipeline"
    assert result.parameters["pipeline"] == expected_class and result.parameters["kind"] == "inpaint"
    assert result.parameters["working_size"] == [64, 40] and result.parameters["device"] == "cpu"
    assert result.parameters["steps_run"] == 2 and result.parameters["seed"] == 0


def test_img2img_without_a_mask_rewrites_the_whole_image(models, scene):
    result = run(scene, models, strength=0.5, steps=4)
    assert result.image.shape == scene.shape and result.mask is None
    assert result.parameters["pipeline"] == "StableDiffusionImg2ImgPipeline"
    assert result.parameters["steps_run"] == 2
    changed = np.abs(result.image.astype(int) - scene).max(axis=2) > 0
    assert changed.mean() > 0.9


def test_inpainting_checkpoint_runs_img2img_as_a_whole_image_inpaint(models, scene):
    result = run(scene, models, model=str(models.inpaint))
    assert result.image.shape == scene.shape and result.parameters["kind"] == "img2img"
    assert result.parameters["pipeline"] == "StableDiffusionInpaintPipeline"
    assert any("inpainting checkpoint" in note for note in result.notes)


def test_same_seed_same_pixels_other_seed_other_pixels(models, scene, box_mask):
    first = run(scene, models, mask=box_mask, seed=7).image
    again = run(scene, models, mask=box_mask, seed=7).image
    other = run(scene, models, mask=box_mask, seed=8).image
    assert np.array_equal(first, again)
    assert np.abs(first.astype(int) - other)[box_mask].mean() > 5


def test_a_named_scheduler_is_used_for_one_run_only(models, scene, box_mask):
    euler = run(scene, models, mask=box_mask, scheduler="euler_a")
    assert euler.parameters["scheduler_used"] == "EulerAncestralDiscreteScheduler"
    default = run(scene, models, mask=box_mask)
    assert default.parameters["scheduler_used"] == "DDIMScheduler"  # the checkpoint's own, restored


def test_pipelines_load_once_and_the_two_kinds_share_weights(models, scene, box_mask):
    run(scene, models, mask=box_mask)
    run(scene, models)
    settings = DiffusionSettings(model=str(models.base))
    inpaint = load_pipeline(settings, "inpaint", "cpu", _float32())
    assert load_pipeline(settings, "inpaint", "cpu", _float32()) is inpaint
    img2img = load_pipeline(settings, "img2img", "cpu", _float32())
    assert img2img is not inpaint and img2img.unet is inpaint.unet


def _float32():
    import torch

    return torch.float32


def test_two_control_maps_give_two_results(models, scene, box_mask):
    depth = np.tile(np.linspace(0.0, 1.0, scene.shape[1], dtype=np.float32), (scene.shape[0], 1))
    common = dict(mask=box_mask, controlnet=str(models.controlnet), control_scale=1.0)
    canny = run(scene, models, control="canny", **common)
    by_depth = run(scene, models, control="depth", depth_map=depth, **common)
    plain = run(scene, models, mask=box_mask)
    assert canny.parameters["pipeline"] == "StableDiffusionControlNetInpaintPipeline"
    for result in (canny, by_depth):
        assert result.image.shape == scene.shape
        assert np.array_equal(result.image[~box_mask], scene[~box_mask])
    assert np.abs(canny.image.astype(int) - by_depth.image)[box_mask].mean() > 2
    assert np.abs(canny.image.astype(int) - plain.image)[box_mask].mean() > 2
    img2img = run(scene, models, controlnet=str(models.controlnet), control="canny")
    assert img2img.parameters["pipeline"] == "StableDiffusionControlNetImg2ImgPipeline"
    assert img2img.image.shape == scene.shape


def test_openpose_keypoints_follow_the_openpose_order():
    landmarks = np.zeros((33, 4), dtype=np.float32)
    landmarks[:, 0] = np.arange(33)
    landmarks[:, 1] = 100 + np.arange(33)
    landmarks[:, 3] = 1.0
    landmarks[28, 3] = 0.2  # right ankle hidden
    expected = np.array([
        [0, 100, 1], [11.5, 111.5, 1], [12, 112, 1], [14, 114, 1], [16, 116, 1], [11, 111, 1], [13, 113, 1],
        [15, 115, 1], [24, 124, 1], [26, 126, 1], [0, 0, 0], [23, 123, 1], [25, 125, 1], [27, 127, 1],
        [5, 105, 1], [2, 102, 1], [8, 108, 1], [7, 107, 1]], dtype=np.float32)
    assert np.array_equal(openpose_keypoints(landmarks), expected)


def test_draw_openpose_uses_the_openpose_colours():
    keypoints = np.zeros((18, 3), dtype=np.float32)
    keypoints[1] = (10, 10, 1)  # neck
    keypoints[2] = (30, 10, 1)  # right shoulder
    canvas = draw_openpose(keypoints, 40, 24, thickness=2)
    assert canvas.shape == (24, 40, 3) and canvas.dtype == np.uint8
    assert tuple(canvas[10, 20]) == (153, 0, 0)  # the limb: first limb colour at 60 %
    assert tuple(canvas[10, 10]) == (255, 85, 0) and tuple(canvas[10, 30]) == (255, 170, 0)  # the joints
    assert not canvas[16:].any() and not canvas[:6].any()


def test_openpose_skeleton_from_a_real_photo_drives_the_controlnet(models):
    image = cv2.resize(photo(PHOTO), (256, 170), interpolation=cv2.INTER_AREA)
    keypoints = openpose_keypoints(pose_landmarks(image))
    assert keypoints[:, 2].sum() >= 14  # a skier in full view: most joints found
    skeleton = draw_openpose(keypoints, 256, 170)
    drawn = skeleton.any(axis=2)
    assert 0.01 < drawn.mean() < 0.3  # a skeleton on black, not a filled image
    mask = np.zeros(image.shape[:2], dtype=bool)
    mask[40:130, 80:180] = True
    common = dict(mask=mask, size=64, controlnet=str(models.controlnet), control_scale=1.0)
    posed = run(image, models, control="openpose", **common)
    edges = run(image, models, control="canny", **common)
    assert posed.image.shape == image.shape
    assert np.array_equal(posed.image[~mask], image[~mask])
    assert np.abs(posed.image.astype(int) - edges.image)[mask].mean() > 2


def test_ip_adapter_reference_reaches_the_output(models, scene, box_mask):
    reference = cv2.resize(photo("face_obama_01.jpg"), (48, 48), interpolation=cv2.INTER_AREA)
    common = dict(mask=box_mask, references=[reference], ip_adapter=str(models.ip_adapter),
                  ip_adapter_weight=IP_ADAPTER_WEIGHT)
    strong = run(scene, models, ip_adapter_scale=1.0, **common)
    off = run(scene, models, ip_adapter_scale=0.0, **common)
    assert strong.image.shape == scene.shape and strong.parameters["ip_adapter_scale"] == 1.0
    assert np.array_equal(strong.image[~box_mask], scene[~box_mask])
    assert np.abs(strong.image.astype(int) - off.image)[box_mask].mean() > 2


def _plain(models, kind="inpaint"):
    import torch

    return load_pipeline(DiffusionSettings(model=str(models.base)), kind, "cpu", torch.float32)


def test_a_control_map_or_reference_the_pipeline_cannot_take_is_an_error(models):
    """pipeline_arguments never drops a conditioning input the report would list as used."""
    from PIL import Image

    plain = _plain(models)
    assert not has_ip_adapter(plain)
    grey = Image.new("RGB", (64, 64))
    call = {"prompt": "a photo", "image": grey, "mask_image": Image.new("L", (64, 64), 255), "height": 64, "width": 64}
    assert pipeline_arguments(plain, dict(call)) == call  # all of these it takes
    with pytest.raises(RepairError) as error:
        pipeline_arguments(plain, {**call, "control_image": grey, "controlnet_conditioning_scale": 0.6})
    message = str(error.value)
    assert "\n" not in message and "does not take a control map" in message and "parameters['controlnet']" in message
    with pytest.raises(RepairError, match="has no IP-Adapter loaded.*drop parameters\\['ip_adapter'\\]"):
        pipeline_arguments(plain, {**call, "ip_adapter_image": grey})
    img2img = _plain(models, "img2img")
    kept = pipeline_arguments(img2img, {"prompt": "a photo", "image": grey, "height": 64, "width": 64})
    assert kept == {"prompt": "a photo", "image": grey}  # img2img sizes the output from the image
    with pytest.raises(RepairError, match="does not take a mask"):
        pipeline_arguments(img2img, {"prompt": "a photo", "image": grey, "mask_image": grey})


@pytest.mark.parametrize("asked, dropped", [
    ({"controlnet": "CONTROLNET", "control": "canny"}, "controlnet"),
    ({"ip_adapter": "IP_ADAPTER", "ip_adapter_weight": IP_ADAPTER_WEIGHT}, "ip_adapter"),
])
def test_the_tool_refuses_a_pipeline_that_lacks_what_the_settings_ask_for(models, scene, box_mask, monkeypatch,
                                                                            asked, dropped):
    """A pipeline loaded without the ControlNet / IP-Adapter the settings name (here: the cache
    handing back the plain one) fails in one line before it runs, instead of running unconditioned."""
    real_load = diffusion.load_pipeline
    monkeypatch.setattr(diffusion, "load_pipeline", lambda settings, kind, device, dtype: real_load(
        settings.model_copy(update={dropped: None}), kind, device, dtype))
    paths = {"CONTROLNET": str(models.controlnet), "IP_ADAPTER": str(models.ip_adapter)}
    parameters = {key: paths.get(value, value) for key, value in asked.items()}
    reference = cv2.resize(photo("face_obama_01.jpg"), (48, 48), interpolation=cv2.INTER_AREA)
    with pytest.raises(RepairError) as error:
        run(scene, models, mask=box_mask, references=[reference], **parameters)
    assert "\n" not in str(error.value) and "StableDiffusionInpaintPipeline" in str(error.value)


def test_crop_first_works_on_the_mask_box_only(models):
    image = cv2.resize(photo(PHOTO), (160, 106), interpolation=cv2.INTER_AREA)
    mask = np.zeros(image.shape[:2], dtype=bool)
    mask[40:60, 70:100] = True
    result = run(image, models, mask=mask, crop_padding=10)
    assert result.parameters["box"] == [60, 30, 110, 70]
    assert result.parameters["working_size"] == [64, 48]
    assert result.image.shape == image.shape
    assert np.array_equal(result.image[~mask], image[~mask])
    assert (np.abs(result.image.astype(int) - image).max(axis=2) > 0)[mask].mean() > 0.5


def test_composite_back_is_the_shared_one_with_the_shared_default(models, scene, box_mask):
    """The fade inside the mask is tools.masks.composite (as in local.composite_back), by default
    over tools.masks.default_feather: the seeded result with a feather is the hard-edged one
    composited back over the input."""
    from fixloop.tools.masks import composite

    hard = run(scene, models, mask=box_mask, feather=0)
    soft = run(scene, models, mask=box_mask)
    assert soft.parameters["feather_px"] == default_feather(scene.shape) == 2.0
    assert np.array_equal(soft.image, composite(scene, hard.image, box_mask, 2.0))
    assert not np.array_equal(soft.image, hard.image)


def test_depth_map_from_a_16_bit_file_is_stretched_and_cropped(tmp_path):
    from PIL import Image

    depth = np.tile(np.arange(0, 40000, 1000, dtype=np.uint16), (10, 1))  # 40 x 10, near = bright
    Image.fromarray(depth).save(tmp_path / "depth.png")
    image = np.zeros((10, 40, 3), dtype=np.uint8)
    settings = DiffusionSettings(model="m", controlnet="c", control="depth", depth_map=str(tmp_path / "depth.png"))
    source = control_source(image, settings)
    assert source.shape == (10, 40, 3) and source.dtype == np.uint8
    assert source[0, 0, 0] == 0 and source[0, -1, 0] == 255 and np.all(np.diff(source[0, :, 0].astype(int)) > 0)
    cropped = control_map(source, settings, (0, 0, 20, 10), (16, 8))
    assert cropped.shape == (8, 16, 3) and cropped.max() < 135  # the far half only
    with pytest.raises(RepairError, match="export it at the image's size"):
        control_source(np.zeros((12, 40, 3), dtype=np.uint8), settings)


def test_working_size_and_crop_box():
    assert working_size(80, 53, 64) == (64, 40)
    assert working_size(1000, 750, 512) == (512, 384)
    assert working_size(768, 1344, 1024) == (584, 1024)
    mask = np.zeros((20, 30), dtype=bool)
    mask[5:8, 10:12] = True
    assert crop_box(mask, mask.shape, padding=3) == (7, 2, 15, 11)
    assert crop_box(mask, mask.shape, padding=50) == (0, 0, 30, 20)


def test_missing_model_folder_is_a_one_line_error(scene, tmp_path):
    missing = tmp_path / "no-such-model"
    with pytest.raises(RepairError) as error:
        diffusion_repair(RepairRequest(image=scene, parameters={"model": str(missing), "steps": 2}))
    message = str(error.value)
    assert "\n" not in message and str(missing) in message and "does not exist" in message


def test_hub_model_not_cached_offline_is_a_one_line_error(scene, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(RepairError) as error:
        diffusion_repair(RepairRequest(image=scene, parameters={"model": "fixloop-tests/no-such-model"}))
    message = str(error.value)
    assert "\n" not in message and "'fixloop-tests/no-such-model'" in message
    assert "offline" in message and "hf download fixloop-tests/no-such-model" in message


@pytest.mark.parametrize("parameters, references, expected", [
    ({"strenght": 0.3}, [], "unknown parameter 'strenght' (did you mean 'strength'?)"),
    ({"strength": 1.5}, [], "strength: Input should be less than or equal to 1"),
    ({"steps": 2, "strength": 0.3}, [], "leaves no denoising step: raise steps to at least 4"),
    ({"scheduler": "eulr"}, [], "did you mean 'euler'?"),
    ({"control": "canny"}, [], "needs a ControlNet"),
    ({"controlnet": "some-org/cn"}, [], "needs a control map"),
    ({"controlnet": "some-org/cn", "control": "depth"}, [], "needs parameters['depth_map']"),
    ({"ip_adapter": "h94/IP-Adapter", "ip_adapter_weight": "x.bin"}, [], "needs a reference image"),
    ({"crop_padding": 8}, [], "crop_padding works around a mask"),
    ({"device": "tpu"}, [], "unknown device 'tpu'"),
])
def test_bad_parameters_fail_before_any_loading(scene, parameters, references, expected):
    request = RepairRequest(image=scene, references=references,
                            parameters={"model": "some-org/some-model", **parameters})
    with pytest.raises(RepairError) as error:
        diffusion_repair(request)
    assert expected in str(error.value) and "\n" not in str(error.value)


def test_no_model_at_all_says_how_to_name_one(scene, monkeypatch):
    monkeypatch.delenv("FIXLOOP_DIFFUSION_MODEL", raising=False)
    with pytest.raises(RepairError, match="FIXLOOP_DIFFUSION_MODEL"):
        diffusion_repair(RepairRequest(image=scene))


def test_mask_of_another_size_is_refused(scene, models):
    with pytest.raises(RepairError, match="export the mask at the image's size"):
        run(scene, models, mask=np.ones((10, 10), dtype=bool))


def test_sdxl_checkpoints_go_through_the_same_entry_call(models, scene, box_mask):
    inpaint = run(scene, models, mask=box_mask, model=str(models.sdxl), scheduler="dpm++_2m_karras")
    assert inpaint.parameters["pipeline"] == "StableDiffusionXLInpaintPipeline"
    assert inpaint.parameters["scheduler_used"] == "DPMSolverMultistepScheduler"
    assert inpaint.image.shape == scene.shape
    assert np.array_equal(inpaint.image[~box_mask], scene[~box_mask])
    assert (np.abs(inpaint.image.astype(int) - scene).max(axis=2) > 0)[box_mask].mean() > 0.5
    img2img = run(scene, models, model=str(models.sdxl))  # derived from the inpaint pipeline just used
    assert img2img.parameters["pipeline"] == "StableDiffusionXLImg2ImgPipeline"
    assert img2img.parameters["scheduler_used"] == "DDIMScheduler"  # the checkpoint's, not the last run's
    assert img2img.image.shape == scene.shape


def test_a_corrupt_model_file_is_a_one_line_error(models, scene, tmp_path):
    """A checkpoint folder whose weights file is cut short (a broken download) fails the repair in one
    line naming the model, not with a loader traceback."""
    import shutil

    broken = tmp_path / "broken-inpaint"
    shutil.copytree(models.inpaint, broken)
    weights = sorted(broken.glob("unet/*.safetensors")) or sorted(broken.glob("unet/*.bin"))
    assert weights, "the tiny pipeline has a unet weights file"
    weights[0].write_bytes(weights[0].read_bytes()[:100])
    with pytest.raises(RepairError) as error:
        diffusion_repair(RepairRequest(image=scene, mask=np.ones(scene.shape[:2], bool),
                                       parameters={"model": str(broken), "steps": 4}))
    message = str(error.value)
    assert "\n" not in message and str(broken) in message
