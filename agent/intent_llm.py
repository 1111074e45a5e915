"""Understanding a chat message with an OpenAI model and structured output.

The official client's ``client.chat.completions.parse(..., response_format=ModelRequest)`` asks the
model for JSON that fits the request schema and parses it into the pydantic model; the answer then
goes through :meth:`agent.intent.Request.canonical`, exactly as the rule parser's does. The wire model
:class:`ModelRequest` is :class:`~agent.intent.Request` with every field required and no defaults
(Structured Outputs' strict mode wants every property listed as required, and some endpoints refuse a
``default`` in the schema); ``null`` and empty lists say "not given".

Settings: ``OPENAI_API_KEY`` (required), ``OPENAI_BASE_URL`` (another endpoint; tests use a loopback
server), ``FIXLOOP_INTENT_MODEL`` (default :data:`DEFAULT_MODEL`). Any failure (no key, network, an
error status, a refusal, JSON that does not fit) falls back to the offline rules, and the parser
counts and keeps the last failure so a front end can say which engine answered.
"""

from __future__ import annotations

import os
from typing import Any, Callable

from pydantic import BaseModel, ConfigDict, Field

from fixloop.agent.intent import Action, ImageRole, LightChange, Region, Request, parse_rules
from fixloop.checks.base import KindName

DEFAULT_MODEL = "gpt-4.1-mini"
MODEL_ENV = "FIXLOOP_INTENT_MODEL"
TIMEOUT_S = 20.0

SYSTEM_PROMPT = """You read one chat message sent to fixloop, a tool that checks edited images for defects and \
repairs them, and return the request it makes as JSON in the given schema. Conventions:
- actions: what to do. check = inspect the image; repair = fix defects (a complaint about a defect, e.g. "it got \
darker", "the horizon is tilted", is a request to repair it); adjust = change the light relative to the current \
image; undo (undo_all true for "back to the original" / "start over"); explain = why / what was found / what a \
defect means; status = where things stand, spend, budget left; set_budget = a dollar limit (max_usd) or free \
repairs only (free_only); approve / reject = yes or no to a paid repair waiting for an answer; cancel = stop; \
help = what can you do; unclear = nothing fixloop can act on. A message that only protects a part or names an \
image has no action.
- targets: defect kinds the message names: mask_spill (edit leaked outside the mask, background changed), \
subject_cropped (cut off), perspective_broken (tilted, crooked, horizon), mirrored (flipped), subjects_swapped \
(two people swapped faces), sticker_object (pasted on, no shadow), exposure_drift (got darker / brighter, \
exposure), color_temperature_drift (too yellow / blue, colour, white balance), light_direction_mismatch (lit \
from the wrong side), identity_drift (a face that looks wrong or not like the person), hand_malformed (hands, \
fingers), texture_blur (blurry, soft, sharpen), edge_halo (halo, fringe, edges). Pointing at the hands always \
targets hand_malformed; the edges always edge_halo; the face only when it looks wrong.
- regions: parts of the picture the message points at to act on: face, hands, left_hand, right_hand, hair, \
eyes, body, clothes, background, sky, edges, subject, left_person, right_person. protect: parts to keep \
("keep her face", "don't touch the sky", "everything except the hands"); a protected part is never in regions.
- light (only for adjust): ev in stops (+ brighter), mired (+ warmer), kelvin for an absolute white. A bit / \
slightly / a touch = 10 mired or 0.25 EV; plain = 20 mired or 0.5 EV; much = 40 mired or 1 EV; explicit \
numbers win ("half a stop" = 0.5, "by 15 mired" = 15, "5000K" = kelvin 5000). "less yellow" = cooler.
- image_role: the role the message gives the image it comes with: source ("this is the original", "the \
before"), reference ("this is what she looks like"), mask, candidate ("this is the edit").
- max_usd: a dollar limit ("no more than $1" = 1, "50 cents" = 0.5); free_only for "free fixes only"."""


class ModelLight(BaseModel):
    model_config = ConfigDict(extra="forbid")

    ev: float = Field(description="stops: + brighter, - darker")
    mired: float = Field(description="+ warmer, - cooler")
    kelvin: float | None = Field(description="an absolute white, or null")


class ModelRequest(BaseModel):
    """The request as the model writes it: every field present, no defaults."""

    model_config = ConfigDict(extra="forbid")

    actions: list[Action]
    targets: list[KindName]
    regions: list[Region]
    protect: list[Region]
    light: ModelLight | None
    max_usd: float | None
    free_only: bool
    undo_all: bool
    image_role: ImageRole | None

    def to_request(self) -> Request:
        data = self.model_dump()
        data["light"] = None if self.light is None else LightChange(**self.light.model_dump())
        return Request(**data).canonical()


class IntentModelError(Exception):
    """The model gave no usable answer (a refusal, or nothing parsed)."""


def parse_with_model(text: str, client: Any = None, model: str | None = None) -> Request:
    """Ask the model; raises on any failure (the caller falls back)."""
    if client is None:
        import openai

        client = openai.OpenAI(timeout=TIMEOUT_S, max_retries=1)  # key and base URL from the environment
    completion = client.chat.completions.parse(
        model=model or os.environ.get(MODEL_ENV) or DEFAULT_MODEL,
        messages=[{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": text}],
        response_format=ModelRequest,
        temperature=0,
    )
    message = completion.choices[0].message
    if message.parsed is None:
        raise IntentModelError(message.refusal or "the model returned no request")
    return message.parsed.to_request()


class ModelParser:
    """A parser that asks the model and falls back to the rules on any failure."""

    def __init__(self, model: str | None = None, client: Any = None,
                 fallback: Callable[[str], Request] = parse_rules):
        self.model = model or os.environ.get(MODEL_ENV) or DEFAULT_MODEL
        self._client = client
        self.fallback = fallback
        self.answered = 0  # messages the model understood
        self.failures = 0  # messages the rules understood instead
        self.last_error: str | None = None

    @property
    def client(self) -> Any:
        if self._client is None:
            import openai

            self._client = openai.OpenAI(timeout=TIMEOUT_S, max_retries=1)
        return self._client

    def __call__(self, text: str) -> Request:
        try:
            request = parse_with_model(text, self.client, self.model)
        except Exception as exc:  # noqa: BLE001 - every failure falls back to the offline rules
            self.failures += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            return self.fallback(text)
        self.answered += 1
        return request


def choose_parser() -> tuple[Callable[[str], Request], str]:
    """The model parser when ``OPENAI_API_KEY`` is set, else the offline rules; and which, in words."""
    if os.environ.get("OPENAI_API_KEY"):
        parser = ModelParser()
        return parser, f"model {parser.model} (offline rules when it fails)"
    return parse_rules, "offline rules (no OPENAI_API_KEY)"
