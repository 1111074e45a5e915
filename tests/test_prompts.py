"""prompts/: the repair templates and their renderer.

The templates are checked against the failure library (every defect kind has its template, the
diffusion starting ranges lie inside the library's), rendered with every slot filled (no brace
survives), rendered from real findings of the checks on the shared photos (the finding's numbers
reach the prompt), and refused when a slot is missing or a name is wrong.
"""

from __future__ import annotations

import re

import pytest

from fixloop.checks.base import DEFECT_KINDS, make_finding
from fixloop.checks.context import CheckContext
from fixloop.checks.engine import run_checks
from fixloop.prompts import MissingSlotError, TemplateError, load_template, render, template_names
from tests import defects
from tests.conftest import REPO, photo

TEMPLATES = ["recompose", "perspective", "two-subjects", "light-direction", "contact-shadow", "exposure-color",
             "face", "hands", "texture-edge", "narrow-edit"]

# The failure library's diffusion starting ranges (denoise, control scale, reference scale) per template:
# each template's own range must lie inside these.
LOCAL, LIGHTING, STRUCTURE = (0.15, 0.35), (0.30, 0.50), (0.50, 0.75)
DENOISE = {
    "recompose": (0.30, 0.50),
    "perspective": (0.20, 0.40),
    "two-subjects": STRUCTURE,
    "light-direction": (0.25, 0.45),
    "contact-shadow": (0.25, 0.45),  # shadow-only light fixes
    "exposure-color": LOCAL,
    "face": LOCAL,
    "hands": LOCAL,
    "texture-edge": LOCAL,
    "narrow-edit": STRUCTURE,
}
CONTROL_SCALE = {"depth": (0.4, 0.9), "canny": (0.4, 0.8), "openpose": (0.4, 0.8)}
PERSPECTIVE_CONTROLS = {"depth": (0.7, 0.9), "canny": (0.5, 0.8)}
IDENTITY_REFERENCE = (0.6, 0.8)
GUIDANCE = (4.0, 8.0)  # realistic 4-6, general 6-8
STEPS = (20, 80)  # quick tests 20-30 ... hard detail 50-80


def full_slots(name: str) -> dict[str, str]:
    """A value for every slot of a template, each one recognisable in the output."""
    return {slot: f"VALUE-{slot}" for slot in load_template(name).slots}


def all_text(rendered) -> str:
    return "\n".join([rendered.gpt_image_prompt, rendered.positive, rendered.negative])


# ---- the template files ---------------------------------------------------------------------------


def test_one_template_per_repair_of_the_failure_library():
    assert template_names() == sorted(TEMPLATES)
    for kind in DEFECT_KINDS.values():
        assert kind.name in load_template(kind.template).kinds, kind.name
    for name in TEMPLATES:
        for kind in load_template(name).kinds:
            assert DEFECT_KINDS[kind].template == name, (name, kind)


@pytest.mark.parametrize("name", TEMPLATES)
def test_every_template_has_all_parts(name):
    t = load_template(name)
    assert t.name == name and t.task and t.preserve and t.change and t.composition
    assert len(t.do_not) >= 3 and all(d.clause and d.negative for d in t.do_not)
    d = t.diffusion
    assert d.mode in ("inpaint", "img2img") and d.positive


@pytest.mark.parametrize("name", TEMPLATES)
def test_diffusion_starts_lie_inside_the_failure_library_ranges(name):
    d = load_template(name).diffusion
    low, high = DENOISE[name]
    assert low <= d.denoise[0] < d.denoise[1] <= high, (d.denoise, DENOISE[name])
    assert GUIDANCE[0] <= d.guidance[0] <= d.guidance[1] <= GUIDANCE[1]
    assert STEPS[0] <= d.steps[0] < d.steps[1] <= STEPS[1]
    for option in d.controls:
        limits = PERSPECTIVE_CONTROLS if name == "perspective" else CONTROL_SCALE
        assert limits[option.type][0] <= option.scale[0] <= option.scale[1] <= limits[option.type][1], option
    if d.reference_scale is not None:
        assert IDENTITY_REFERENCE[0] <= d.reference_scale[0] <= d.reference_scale[1] <= IDENTITY_REFERENCE[1]


def test_perspective_offers_depth_and_canny_and_face_an_identity_reference():
    p = load_template("perspective").diffusion
    assert {o.type: tuple(o.scale) for o in p.controls} == {"depth": (0.7, 0.9), "canny": (0.5, 0.8)}
    assert load_template("face").diffusion.reference_scale == (0.6, 0.8)
    assert load_template("two-subjects").diffusion.reference_scale == (0.6, 0.8)


def _ngrams(text: str, n: int = 7) -> set[tuple[str, ...]]:
    words = re.findall(r"[a-z0-9']+", text.lower())
    return {tuple(words[i:i + n]) for i in range(len(words) - n + 1)}


def test_templates_are_written_in_the_projects_own_words():
    """No run of 7 words from the failure library's text appears in any template."""
    spec = REPO.parent / "shared" / "spec" / "failure-library.md"
    if not spec.exists():
        pytest.skip(f"{spec} is not here")
    borrowed = _ngrams(spec.read_text(encoding="utf-8"))
    for name in TEMPLATES:
        text = " ".join(load_template(name).texts())
        shared = _ngrams(text) & borrowed
        assert not shared, (name, sorted(" ".join(g) for g in shared)[:3])


# ---- rendering ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", TEMPLATES)
def test_full_slot_set_renders_without_a_brace(name):
    slots = full_slots(name)
    rendered = render(name, request=slots)
    for text in (rendered.gpt_image_prompt, rendered.positive, rendered.negative):
        assert "{" not in text and "}" not in text
    assert rendered.slots == slots and set(rendered.sources.values()) <= {"request"}
    used = all_text(rendered)
    for slot in slots:
        assert f"VALUE-{slot}" in used, slot  # every slot reaches the output


@pytest.mark.parametrize("name", TEMPLATES)
def test_gpt_prompt_has_the_five_sections_in_order(name):
    rendered = render(name, request=full_slots(name))
    text = rendered.gpt_image_prompt
    heads = ["Task: ", "\n\nKeep unchanged:\n- ", "\n\nChange:\n- ", "\n\nComposition:\n- ", "\n\nDo not:\n- "]
    positions = [text.index(h) for h in heads]
    assert positions == sorted(positions) and positions[0] == 0
    t = load_template(name)
    do_not = text.split("Do not:\n", 1)[1].splitlines()
    assert len(do_not) == len(t.do_not)


@pytest.mark.parametrize("name", TEMPLATES)
def test_do_not_clauses_become_the_negative_prompt(name):
    rendered = render(name, request=full_slots(name))
    phrases = rendered.negative.split(", ")
    assert len(phrases) == len(set(phrases)) >= 3
    slots = full_slots(name)
    for entry in load_template(name).do_not:
        for phrase in entry.negative.format_map(slots).split(","):
            assert phrase.strip() in phrases, phrase
        assert f"- {entry.clause.format_map(slots)}" in rendered.gpt_image_prompt


@pytest.mark.parametrize("name", [n for n in TEMPLATES if load_template(n).required_slots])
def test_a_missing_slot_raises_and_names_it(name):
    slots = full_slots(name)
    for missing in load_template(name).required_slots:
        partial = {k: v for k, v in slots.items() if k != missing}
        with pytest.raises(MissingSlotError, match=repr(missing)) as caught:
            render(name, request=partial)
        assert missing in caught.value.missing


def test_required_slots_are_the_ones_no_default_can_stand_for():
    required = {n: load_template(n).required_slots for n in TEMPLATES if load_template(n).required_slots}
    assert required == {"hands": ["hand"], "light-direction": ["light_direction"], "narrow-edit": ["edit"],
                        "texture-edge": ["defect"], "two-subjects": ["subjects"]}


@pytest.mark.parametrize("name", TEMPLATES)
def test_defaults_render_with_only_the_required_slots(name):
    t = load_template(name)
    rendered = render(name, request={s: "X" for s in t.required_slots})
    assert "{" not in all_text(rendered)
    assert {k for k, v in rendered.sources.items() if v == "default"} == set(t.slots) - set(t.required_slots)


def test_unknown_template_suggests_the_closest():
    with pytest.raises(TemplateError, match="did you mean 'hands'"):
        load_template("hnads")
    with pytest.raises(TemplateError, match="did you mean 'exposure-color'"):
        render("exposure-colour")
    with pytest.raises(TemplateError, match="known templates"):
        render("zzz")


def test_unknown_request_key_suggests_the_slot():
    with pytest.raises(TemplateError, match="did you mean 'light_direction'"):
        render("light-direction", request={"light_directon": "the left"})
    with pytest.raises(TemplateError, match="no use for 'extend'"):
        render("hands", request={"hand": "the left hand", "extend": {"top": 10}})


def test_bad_slot_values_are_refused():
    with pytest.raises(TemplateError, match="empty"):
        render("hands", request={"hand": "  "})
    with pytest.raises(TemplateError, match="brace"):
        render("hands", request={"hand": "the {left} hand"})
    with pytest.raises(TemplateError, match="needs text"):
        render("hands", request={"hand": None})


def test_a_finding_for_another_template_is_refused(policy):
    finding = _finding("edge_halo", policy, score=0.3, evidence={"polarity": "bright", "boundary": "edges"})
    with pytest.raises(TemplateError, match="'texture-edge', not 'hands'"):
        render("hands", finding)


def test_request_values_override_the_finding_and_named_targets_expand(policy):
    finding = _finding("color_temperature_drift", policy, score=40, unit="mired",
                       evidence={"mired_shift": 40.0, "cct_before_k": 6508, "cct_after_k": 5170})
    from_finding = render("exposure-color", finding)
    assert "6508 K" in from_finding.slots["target_white_balance"]
    chosen = render("exposure-color", finding, {"target_white_balance": "Warm sunset"})
    assert "about 4500 K" in chosen.gpt_image_prompt and chosen.sources["target_white_balance"] == "request"
    assert "40 mired" in chosen.gpt_image_prompt  # the drift still comes from the finding


def test_lists_and_subject_tables_become_readable_text():
    r = render("two-subjects", request={"subjects": {"on the left": "the woman in the red coat",
                                                     "on the right": "the man with the beard"}})
    assert ("identity and place: the woman in the red coat (on the left); the man with the beard (on the right)."
            in r.gpt_image_prompt)
    r = render("two-subjects", request={"subjects": [{"place": "on the left", "description": "Anna."}, "Ben"]})
    assert r.slots["subjects"] == "Anna (on the left); Ben"
    with pytest.raises(TemplateError, match="at least two"):
        render("two-subjects", request={"subjects": ["only one"]})
    r = render("recompose", request={"extend": {"top": 120, "left": 80}, "cut_parts": ["the face", "the left foot"]})
    assert "by 120 px at the top and 80 px at the left" in r.gpt_image_prompt
    assert "the top and left edges" in r.gpt_image_prompt and "the face and the left foot" in r.gpt_image_prompt


# ---- diffusion starting parameters ------------------------------------------------------------------


@pytest.mark.parametrize("name", TEMPLATES)
def test_diffusion_parameters_are_accepted_by_the_diffusers_tool(name):
    from fixloop.tools.diffusion import DiffusionSettings

    rendered = render(name, request=full_slots(name))
    params = rendered.diffusion_parameters()
    d = load_template(name).diffusion
    assert d.denoise[0] <= params["strength"] <= d.denoise[1]
    assert d.steps[0] <= params["steps"] <= d.steps[1]
    settings = DiffusionSettings.model_validate({"model": "some/model", **params})
    assert settings.strength == params["strength"] and settings.steps == params["steps"]
    if d.control != "none":
        assert settings.control == d.control
        option = next(o for o in d.controls if o.type == d.control)
        assert option.scale[0] <= settings.control_scale <= option.scale[1]


def test_diffusion_numbers_and_overrides():
    r = render("perspective")
    assert r.diffusion["strength"] == 0.3 and r.diffusion["control"] == "depth" and r.diffusion["control_scale"] == 0.8
    assert r.diffusion["mode"] == "img2img" and r.diffusion["ip_adapter_scale"] is None
    r = render("perspective", request={"control": "canny"})
    assert r.diffusion["control"] == "canny" and r.diffusion["control_scale"] == 0.65
    r = render("perspective", request={"control": "none", "strength": 0.25, "steps": 35})
    assert r.diffusion_parameters() == {"strength": 0.25, "guidance": 5.0, "steps": 35}
    with pytest.raises(TemplateError, match="offers control depth, canny"):
        render("perspective", request={"control": "openpose"})
    face = render("face").diffusion_parameters()
    assert face == {"strength": 0.28, "guidance": 5.0, "steps": 40, "ip_adapter_scale": 0.7}
    hands = render("hands", request={"hand": "the left hand"}).diffusion_parameters()
    assert hands == {"strength": 0.28, "guidance": 5.0, "steps": 65, "control": "openpose", "control_scale": 0.7}


# ---- from real findings on the shared photos ------------------------------------------------------


def _finding(kind, policy, score, unit="", evidence=None, mask=None):
    """A finding as the check would make it, for kinds whose real input is costly to build here."""
    return make_finding(kind, policy.params(kind), score=score, threshold=0.0, unit=unit, message="test",
                        evidence=evidence or {}, mask=mask)


def _check(name, candidate, source=None, mask=None, references=None):
    ctx = CheckContext.from_arrays(candidate, source, mask, references=references or [])
    report = run_checks(ctx, None, names=[name])
    assert report.findings, f"{name} found nothing"
    return report.findings[0]


def test_white_balance_drift_reaches_the_prompt():
    case = defects.white_balance(photo("body_skier_01.jpg"), 40.0)
    finding = _check("color_temperature_drift", case.candidate, case.source)
    r = render(finding.repair_template, finding)
    mired = finding.evidence["mired_shift"]
    assert f"moved {abs(mired):.0f} mired" in r.gpt_image_prompt and "warmer" in r.gpt_image_prompt
    assert f"about {finding.evidence['cct_before_k']:.0f} K" in r.gpt_image_prompt
    assert r.sources["drift"] == "finding" and r.sources["target_exposure"] == "default"
    assert "{" not in all_text(r)


def test_exposure_drift_reaches_the_prompt():
    case = defects.exposure(photo("body_skier_01.jpg"), -0.8)
    finding = _check("exposure_drift", case.candidate, case.source)
    r = render("exposure-color", finding)
    assert f"{abs(finding.evidence['ev_change']):.2f} EV darker than the source" in r.gpt_image_prompt
    assert "that of the source" in r.slots["target_exposure"]


def test_rotation_reaches_the_perspective_prompt():
    case = defects.rotate(photo("body_skier_01.jpg"), 4.0)
    finding = _check("perspective_broken", case.candidate, case.source)
    r = render("perspective", finding)
    assert f"{abs(finding.score):.1f}° counter-clockwise" in r.gpt_image_prompt


def test_crop_reaches_the_recompose_prompt():
    case = defects.crop_through_face(photo("body_skier_01.jpg"), 0.5)
    finding = _check("subject_cropped", case.candidate, case.source)
    r = render("recompose", finding)
    top = finding.evidence["extend"]["top"]
    assert f"by {top} px at the top" in r.gpt_image_prompt and "the top edge" in r.gpt_image_prompt
    assert "the main subject's face" in r.slots["cut_parts"]
    # the user can still say how much to extend
    r = render("recompose", finding, {"extend": {"top": 200, "bottom": 40}})
    assert "by 200 px at the top and 40 px at the bottom" in r.gpt_image_prompt


def test_mirrored_renders_recompose_with_its_defaults():
    case = defects.flip(photo("body_skier_01.jpg"))
    finding = _check("mirrored", case.candidate, case.source)
    r = render(finding.repair_template, finding)
    assert r.template == "recompose" and "mirror the picture or swap left and right" in r.gpt_image_prompt
    assert set(r.sources.values()) == {"default"}


def test_spill_reaches_the_narrow_edit_prompt():
    case = defects.edit_spills_outside_mask(photo("body_skier_01.jpg"), 0.15)
    finding = _check("mask_spill", case.candidate, case.source, case.mask)
    with pytest.raises(MissingSlotError, match="'edit'"):
        render("narrow-edit", finding)  # the checks cannot know what the edit was meant to do
    r = render("narrow-edit", finding, {"edit": "recolour the jacket red"})
    assert r.gpt_image_prompt.startswith("Task: Make only this change: recolour the jacket red. Keep it inside")
    side = finding.evidence["regions"][0]["side"]
    assert f"{side} the masked area" in r.slots["spill"]


def test_halo_and_blur_reach_the_texture_edge_prompt():
    image = photo("face_obama_04.jpg")
    case = defects.make("halo_ring", image, 0.8)
    halo = _check("edge_halo", case.candidate, case.source)
    r = render("texture-edge", halo)
    assert r.slots["defect"] == f"a {halo.evidence['polarity']} fringe runs along the subject's outline"
    case = defects.blur(photo("body_skier_01.jpg"), 3.0)
    blur = _check("texture_blur", case.candidate, case.source)
    r = render("texture-edge", blur)
    assert f"fine detail at {blur.score:.0%} of the source's" in r.gpt_image_prompt


def test_hand_finding_names_the_hand_and_where_it_is():
    image = photo("gen_hand_malformed_03.jpg")  # a raised hand low in the middle, palm to the camera
    finding = _check("hand_malformed", image)
    assert finding.evidence["handedness"] == "Left"  # MediaPipe's selfie convention
    r = render("hands", finding)
    assert r.slots["hand"] == "the person's right hand (at the bottom of the picture)"
    assert r.gpt_image_prompt.startswith("Task: Repair the person's right hand (at the bottom of the picture) so that")


def test_identity_finding_names_the_reference():
    finding = _check("identity_drift", photo("face_obama_01.jpg"), references=[photo("face_biden_01.jpg")])
    r = render("face", finding)
    assert "unmistakably the person in reference 1" in r.gpt_image_prompt
    assert r.diffusion_parameters()["ip_adapter_scale"] == 0.7


def test_swap_evidence_becomes_per_subject_text(policy):
    evidence = {"kind": "swapped", "face_position": "on the left", "was": "the person on the left in the source",
                "now_looks_like": "the person on the right in the source", "other_face_position": "on the right"}
    finding = _finding("subjects_swapped", policy, score=0.3, evidence=evidence)
    r = render("two-subjects", finding)
    assert r.slots["subjects"] == ("the face on the left belongs to the person on the left in the source, and the "
                                   "face on the right to the person on the right in the source")
