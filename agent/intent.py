"""What a chat message asks for, as one typed request, and the offline rule parser that reads it.

A message to fixloop ("the left hand looks wrong and it got darker, fix it but keep her face") is
understood as a :class:`Request`: what to do (``actions``, in the order the conversation runs them),
which defects (``targets``, the failure library's kind names), which parts of the picture it points
at (``regions``) and which must be kept (``protect``), a light change relative to the current image
(``light``), budget limits, and the role of an attached image ("this is the original").

Two engines fill it: :func:`parse_rules` here (offline, deterministic, the default without an API
key and the fallback when the model fails) and the OpenAI structured-output parser in
:mod:`agent.intent_llm`. Both go through :meth:`Request.canonical`, so the same request compares
equal whichever engine read it. The conventions both follow:

- ``targets`` are defect kinds named by the message: defect words ("it got darker" ->
  ``exposure_drift``, "too yellow" -> ``color_temperature_drift``, "a white halo" -> ``edge_halo``)
  and the picture parts that only one defect repairs (the hands -> ``hand_malformed``, the face when
  it "looks wrong" or "doesn't look like her" -> ``identity_drift``, the edges -> ``edge_halo``).
- A complaint about light ("it got darker", "it's too yellow") is a defect to repair; an order to
  change it ("make it a bit warmer", "half a stop brighter") is an ``adjust`` with a ``light`` change
  relative to the current image: a bit = 10 mired / 0.25 EV, plain = 20 mired / 0.5 EV, much = 40
  mired / 1 EV; explicit numbers win ("half a stop" 0.5 EV, "by 15 mired", "to 5000 K").
- Negations protect: "don't change her face", "keep the face", "leave the hands alone", "everything
  except the sky" put the part in ``protect``, never in ``regions``.
- Budgets: "no more than $1" -> ``max_usd`` 1; "free fixes only" -> ``free_only``.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fixloop.checks.base import KindName

Action = Literal[
    "check",  # run the checks on the current image and report
    "repair",  # run the repair loop (restricted to targets / regions when given)
    "adjust",  # a light change relative to the current image (``light``)
    "undo",  # back one step (``undo_all``: back to the original)
    "explain",  # say what was found, why, and what would fix it
    "status",  # where the conversation stands: images, steps, spend, budget, a waiting approval
    "set_budget",  # change the dollar limit (``max_usd``) or allow only free repairs (``free_only``)
    "approve",  # yes to the paid call the run waits on
    "reject",  # no to the paid call the run waits on
    "cancel",  # stop: drop a waiting run
    "help",  # what the assistant can do
    "unclear",  # nothing fixloop can act on
]
Region = Literal[
    "face", "hands", "left_hand", "right_hand", "hair", "eyes", "body", "clothes", "background", "sky",
    "edges", "subject", "left_person", "right_person",
]
ImageRole = Literal["candidate", "source", "reference", "mask"]

# The order actions run in when one message asks for several: settings first, then answers to a
# waiting question, then changes to the image, then questions about it.
ACTION_ORDER: tuple[str, ...] = ("set_budget", "cancel", "reject", "approve", "undo", "check", "repair",
                                 "adjust", "explain", "status", "help", "unclear")
# Picture parts that one defect kind repairs: pointing at them (outside ``protect``) targets it.
REGION_KINDS: dict[str, tuple[str, ...]] = {
    "hands": ("hand_malformed",), "left_hand": ("hand_malformed",), "right_hand": ("hand_malformed",),
    "edges": ("edge_halo",),
}
# What a protected part rules out: the repairs that would redraw it.
PROTECT_KINDS: dict[str, tuple[str, ...]] = {
    "face": ("identity_drift", "subjects_swapped"), "eyes": ("identity_drift",),
    "left_person": ("identity_drift", "subjects_swapped"), "right_person": ("identity_drift", "subjects_swapped"),
    "hands": ("hand_malformed",), "left_hand": ("hand_malformed",), "right_hand": ("hand_malformed",),
    "edges": ("edge_halo",), "hair": ("edge_halo",),
}


class LightChange(BaseModel):
    """A light change relative to the current image (or to an absolute white, ``kelvin``)."""

    model_config = ConfigDict(extra="forbid")

    ev: float = Field(0.0, description="exposure change in stops: + brighter, - darker (half a stop = 0.5)")
    mired: float = Field(0.0, description="white-balance shift in mired: + warmer, - cooler (a bit = 10)")
    kelvin: float | None = Field(None, description="an absolute white to light the picture to, e.g. 5000")

    @model_validator(mode="after")
    def _rounded(self) -> "LightChange":
        self.ev = round(float(self.ev), 2)
        self.mired = round(float(self.mired), 1)
        return self

    @property
    def empty(self) -> bool:
        return not self.ev and not self.mired and self.kelvin is None


class Request(BaseModel):
    """One chat message, understood."""

    model_config = ConfigDict(extra="forbid")

    actions: list[Action] = Field(default_factory=list, description="what to do, in ACTION_ORDER; empty when "
                                  "the message only sets a constraint or names an image")
    targets: list[KindName] = Field(default_factory=list, description="defect kinds the message names")
    regions: list[Region] = Field(default_factory=list, description="picture parts the message points at")
    protect: list[Region] = Field(default_factory=list, description="picture parts to keep as they are")
    light: LightChange | None = Field(None, description="light change of an 'adjust'")
    max_usd: float | None = Field(None, description="dollar limit for paid repairs")
    free_only: bool = Field(False, description="only free (local) repairs")
    undo_all: bool = Field(False, description="undo back to the original image")
    image_role: ImageRole | None = Field(None, description="role the message gives the image it attaches or "
                                         "points to: source = the original / before, reference = what the "
                                         "person or product looks like, mask = the edit mask")

    @field_validator("actions", "targets", "regions", "protect", mode="before")
    @classmethod
    def _none_is_empty(cls, value):
        return [] if value is None else value

    def canonical(self) -> "Request":
        """The same request in one spelling: lists deduplicated and ordered, an empty light change
        dropped, 'unclear' only when nothing else was understood."""
        actions = sorted(set(self.actions), key=ACTION_ORDER.index)
        light = None if self.light is None or self.light.empty else self.light
        understood = bool(self.targets or self.regions or self.protect or light or self.max_usd is not None
                          or self.free_only or self.image_role)
        if len(actions) > 1 or understood:
            actions = [a for a in actions if a != "unclear"]
        if not actions and not understood:
            actions = ["unclear"]
        protect = sorted(set(self.protect))
        return Request(actions=actions, targets=sorted(set(self.targets)),
                       regions=sorted(set(self.regions) - set(protect)), protect=protect, light=light,
                       max_usd=None if self.max_usd is None else round(float(self.max_usd), 2),
                       free_only=self.free_only, undo_all=self.undo_all, image_role=self.image_role)

    def wanted_kinds(self) -> list[str] | None:
        """The defect kinds a repair should be restricted to (None: every P0/P1 it finds)."""
        kinds = set(self.targets)
        for region in self.regions:
            kinds.update(REGION_KINDS.get(region, ()))
        return sorted(kinds) or None

    def protected_kinds(self) -> list[str]:
        """The defect kinds a repair must leave alone because they would redraw a protected part."""
        return sorted({k for region in self.protect for k in PROTECT_KINDS.get(region, ())})

    def summary(self) -> str:
        """One line: what was understood (shown by the chat, logged by the bot)."""
        parts = [", ".join(self.actions) or "note"]
        for name in ("targets", "regions", "protect"):
            if getattr(self, name):
                parts.append(f"{name} {', '.join(getattr(self, name))}")
        if self.light is not None:
            light = self.light
            bits = [f"{light.ev:+g} EV" if light.ev else "", f"{light.mired:+g} mired" if light.mired else "",
                    f"{light.kelvin:g} K" if light.kelvin else ""]
            parts.append("light " + " ".join(b for b in bits if b))
        if self.max_usd is not None:
            parts.append(f"max ${self.max_usd:.2f}")
        if self.free_only:
            parts.append("free only")
        if self.undo_all:
            parts.append("back to the original")
        if self.image_role:
            parts.append(f"image is the {self.image_role}")
        return "; ".join(parts)
