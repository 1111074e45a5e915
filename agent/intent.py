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

import difflib
import re
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


# ---- the offline rule parser ----------------------------------------------------------------------
#
# A message is normalised (lower case, apostrophes dropped, common typos mended against the words the
# rules use), split into clauses at punctuation and at "and / but / then / except", and each clause is
# read on its own, so that a negation ("but keep her face") protects only what its own clause names.

# Words the rules look for: an unknown word within edit distance of one of these is taken for it.
VOCABULARY = sorted(set("""
check inspect review examine repair fix fixes correct restore remove sharpen clean sort undo revert
explain status budget approve approved reject decline cancel abort help original source before
reference mask edited hands hand fingers finger face faces background backdrop edges edge outline
hair eyes clothes sky subject person people brighter darker warmer cooler colder lighter dimmer
brighten darken warm cool bright dark exposure colour color colours colors white balance yellow
orange blue green magenta halo halos fringe fringy fringing leaked leaking spill spilled bleed bled
mirrored mirror flipped cropped crop tilted crooked leaning skewed perspective horizon verticals
blurry blurred blur soft mushy smeared texture detail swapped switched pasted sticker floating shadow
identity likeness direction slightly little touch much please stop stops mired kelvin cents dollars
spend spent money free paid only except keep leave alone touch change protect preserve
anything something wrong broken weird strange different flagged mean found find going
""".split()))
# Everyday words never "corrected" into one of the rule words.
COMMON = set("""
the this that these those there their then than them they what when where which while with would
could should about after again also away back been being both came come does doing done down each
even ever every from give gave good great have here into just know like look looks looking made make
many more most next nothing once only other over really same seems some such sure take thanks than
thing things think those time very want well were will your yours maybe instead right left whole
sure okay yeah nope last first used image photo picture please version one ones anymore now
exactly rest weather paris hello under keep load lamp light lights side comes head feet cutout top
bottom person under ship shipping worth why how much many like also between edit edits changed change
break broke broken fixed fixing repaired repairs fixes
""".split())
TYPOS = {"teh": "the", "pls": "please", "plz": "please", "u": "you", "ur": "your", "r": "are",
         "thx": "thanks", "clr": "colour", "bg": "background", "pic": "picture", "img": "image"}


def _mend(word: str) -> str:
    if word in TYPOS:
        return TYPOS[word]
    if len(word) < 4 or word in COMMON or word in VOCABULARY:
        return word
    close = difflib.get_close_matches(word, VOCABULARY, n=1, cutoff=0.8)
    return close[0] if close else word


def normalise(text: str) -> str:
    """Lower case, apostrophes dropped ("don't" -> "dont"), words mended, spaces collapsed."""
    text = text.lower().replace("\u2019", "'").replace("\u2018", "'").replace("'", "")
    text = re.sub(r"[a-z]+", lambda m: _mend(m.group(0)), text)
    return " ".join(text.split())


CLAUSE_BREAK = re.compile(r"[,;!?:]|(?<!\d)\.(?!\d)|\b(?:and then|and|but|then|also|plus|though|however|instead)\b"
                          r"|(?=\bexcept\b)")

# ---- what a clause can say

REGION_PATTERNS: list[tuple[str, str]] = [
    ("left_hand", r"\bleft hand\b"),
    ("right_hand", r"\bright hand\b"),
    ("hands", r"\b(hands?|fingers?|thumbs?|palms?)\b"),
    ("left_person", r"\b(left (person|persons|one|guy|man|woman|girl|boy|subject)|(person|one|guy|man|woman) on the left)\b"),
    ("right_person", r"\b(right (person|persons|one|guy|man|woman|girl|boy|subject)|(person|one|guy|man|woman) on the right)\b"),
    ("face", r"\b(face|faces)\b"),
    ("eyes", r"\beyes?\b"),
    ("hair", r"\bhair\b"),
    ("clothes", r"\b(clothes|clothing|shirt|dress|jacket|outfit)\b"),
    ("background", r"\b(background|backdrop)\b"),
    ("sky", r"\bsky\b"),
    ("edges", r"\b(edges?|outlines?|contours?)\b"),
    ("body", r"\bbody\b"),
    ("subject", r"\bsubject\b"),
]
PROTECT = re.compile(r"\b(keep|keeping|leave|leaving|except|preserve|protect|untouched|alone|not the|but not"
                     r"|(dont|do not|never|without) (touch|touching|change|changing|alter|modify|edit|fix|repair|"
                     r"redo|regenerate|mess))\b")
FACE_WRONG = re.compile(r"\b(wrong|off|weird|strange|different|doesnt look like|not (her|him|them)|changed|"
                        r"distorted|messed up|broken|fake|melted)\b")
DEFECT_PATTERNS: list[tuple[str, str]] = [
    ("mask_spill", r"\b(leak\w*|bled|bleed\w*|spill\w*|outside (of )?the mask|changed the background( too)?|"
                   r"background (changed|is different)|changed (everything|the whole \w+)|whole (image|picture) changed)\b"),
    ("mirrored", r"\b(mirror\w*|flipped|flip it back|reversed)\b"),
    ("subject_cropped", r"\b(crop|cropped|cropping|cut off|chopped|out of (the )?frame)\b"),
    ("perspective_broken", r"\b(tilt\w*|crooked|leaning|skew\w*|perspective|horizon|verticals|not level)\b"),
    ("texture_blur", r"\b(blur\w*|soft|mushy|smeared|smudged|sharpen\w*|lost (the )?(detail|texture)|texture|detail)\b"),
    ("edge_halo", r"\b(halos?|fring\w*|glow\w* around|white (edge|line|outline)s?|bright edges?)\b"),
    ("identity_drift", r"\b(doesnt look like (her|him|them)|not the same person|identity|likeness|looks like someone else)\b"),
    ("subjects_swapped", r"\b(swap\w*|switched|exchanged) (faces|places|identities|heads)\b|\bswapped\b"),
    ("sticker_object", r"\b(pasted|sticker|floating|no (contact )?shadows?|stuck on)\b"),
    ("light_direction_mismatch", r"\b(wrong side|wrong direction|lit from|(light|lighting) direction|"
                                 r"shadows? (go|goes|fall|falls) the wrong way)\b"),
]
EXPOSURE_WORDS = r"(darker|dark|brighter|bright|dim|dimmer|lighter|washed out|overexposed|underexposed|darkened)"
COLOUR_WORDS = r"(yellow\w*|orange|blue|bluish|bluer|green\w*|magenta|pink\w*|warm|warmer|cool|cooler|cold|colder)"
COMPLAINT = re.compile(r"\b(got|gotten|gone|went|turned|became|become|looks?|looking|seems?|is|its|are|too|now)\b")
COMMAND = re.compile(r"\b(make|made|set|go|bring|push|give it|turn it|brighten|darken|warm (it )?up|cool (it )?down)\b")
SLIGHT = re.compile(r"\b(a bit|bit|a little|little|slightly|a touch|touch|a tad|tad|somewhat|tiny|marginally|smidge)\b")
STRONG = re.compile(r"\b(much|a lot|way|lots|really|very|significantly|far)\b")
WARMER = re.compile(r"\b(warmer|warm (it )?up|more warm|less (blue|cool|cold)|more (yellow|orange))\b")
COOLER = re.compile(r"\b(cooler|colder|cool (it )?down|less (yellow|warm|orange)|bluer|more blue)\b")
BRIGHTER = re.compile(r"\b(brighter|brighten|lighter|lift the exposure|more exposure)\b")
DARKER = re.compile(r"\b(darker|darken|dimmer|less exposure)\b")
STOPS = re.compile(r"\b(half|a third of|a quarter of|a full|one|two|three|a|\d+(?:\.\d+)?)\s+(a\s+)?stops?\b")
STOP_WORDS = {"half": 0.5, "a third of": 0.33, "a quarter of": 0.25, "a full": 1.0, "one": 1.0, "a": 1.0,
              "two": 2.0, "three": 3.0}
EV = re.compile(r"([+-]?\d+(?:\.\d+)?)\s*ev\b")
MIRED = re.compile(r"([+-]?\d+(?:\.\d+)?)\s*mired\b")
KELVIN = re.compile(r"\b(\d{4,5})\s*(k|kelvin)\b")

MONEY = [(re.compile(r"\$\s*(\d+(?:\.\d+)?)"), 1.0), (re.compile(r"\b(\d+(?:\.\d+)?)\s*(dollars?|bucks|usd)\b"), 1.0),
         (re.compile(r"\b(\d+)\s*(cents?)\b"), 0.01)]
FREE_ONLY = re.compile(r"\b(free (fixes|repairs|ones|edits)? ?only|only free|nothing paid|no paid|"
                       r"dont spend (any )?(money|anything|a cent)|without (paying|spending)|no money|for free)\b")
ACTION_PATTERNS: list[tuple[str, str]] = [
    ("check", r"\b(check|inspect|review|examine|assess|evaluate|qa|look at|take a look|have a look|look over)\b"
              r"|\bis (this|it) (ok|okay|good|fine|alright|shippable)\b|\b(ok|okay|good|ready) to (ship|go)\b"
              r"|\b(is )?(anything|something) (wrong|broken|off)\b|\bdid (the|this|my|it) (edit )?(break|mess|ruin)"
              r"|\bwhats wrong with (it|this|the)\b"),
    ("repair", r"\b(fix|fixes|repair|correct|clean (it )?up|clean|sort (it )?out|sort|get rid of|remove|restore|"
               r"put (it|the \w+|them) back|flip it back|sharpen\w*|make it right)\b"),
    ("undo", r"\b(undo|revert|roll ?back|go back|take (me |it |that |us )?back|back to the original|start over|"
             r"start again|from scratch)\b"),
    ("explain", r"\b(why|explain|what does .* mean|what is (a |an )?.* mean|what did you find|tell me more|"
                r"what (is|was) (that|this) about)\b"),
    ("status", r"\bstatus\b|\bhow much (have|did|has|is|was)?\s*(we|you|it|this|that)?\s*(spent|spend|cost)\b"
               r"|\bhow much\b.*\b(left|remaining)\b|\bwhere are we\b|\bhows it going\b|\bwhats left\b|\bprogress\b"),
    ("help", r"\bhelp\b|\bwhat can you do\b|\bhow does (this|it) work\b|\bwhat are (the|your) commands\b|\bhow do i use\b"),
]
APPROVE = re.compile(r"^(yes|yep|yeah|yup|sure|ok|okay|y|approve\w*|go ahead|go for it|do it|run it|lets do it)\b"
                     r"|\b(approve\w*|go ahead|go for it|pay for it)\b")
REJECT = re.compile(r"^(no|nope|nah|n)\b(?! (more|paid|money|charge))|\b(reject\w*|decline\w*|not worth it|dont bother"
                    r"|(dont|do not) (run|do|pay|approve)( it| that| this)?|skip (it|that|this|the paid\w*))\b")
CANCEL = re.compile(r"\b(cancel\w*|abort|never ?mind|forget (it|that)|halt)\b")
UNDO_ALL = re.compile(r"\b(original|start over|start again|from scratch|all the way|everything|all of it)\b")
ROLE_INTRO = re.compile(r"\b(this is|this ones?|this one is|heres|here is|attached is|attaching|use this as|"
                        r"that is|thats|this image is|this photo is)\b")
ROLE_NOUNS: list[tuple[str, str]] = [
    ("source", r"\b(original|source|before|unedited|raw)\b"),
    ("reference", r"\b(reference|ref)\b"),
    ("mask", r"\bmask\b"),
    ("candidate", r"\b(edit|edited|result|output)\b"),
]
LOOKS_LIKE = re.compile(r"\b(this is|heres|here is) (what|how) (she|he|they|it|the \w+) (looks?|should look)\b")


def _light(clause: str) -> tuple[LightChange | None, bool]:
    """The light change a clause orders, and whether it is an order at all (not a complaint)."""
    directions = [bool(WARMER.search(clause)), bool(COOLER.search(clause)),
                  bool(BRIGHTER.search(clause)), bool(DARKER.search(clause))]
    explicit_ev, explicit_mired, kelvin = EV.search(clause), MIRED.search(clause), KELVIN.search(clause)
    stops = STOPS.search(clause)
    if not (any(directions) or explicit_ev or explicit_mired or kelvin or (stops and any(directions[2:]))):
        return None, False
    ordered = bool(COMMAND.search(clause) or SLIGHT.search(clause) or explicit_ev or explicit_mired or kelvin or stops
                   or re.match(r"^(now |ok |okay |please )?(a |much |way )?(warmer|cooler|colder|brighter|darker)",
                               clause))
    if not ordered and COMPLAINT.search(clause):
        return None, False
    degree = 0.5 if SLIGHT.search(clause) else 2.0 if STRONG.search(clause) else 1.0
    warm, cool, bright, dark = directions
    ev = mired = 0.0
    if bright or dark or explicit_ev:
        sign = 1.0 if bright else -1.0 if dark else 1.0
        if explicit_ev:
            ev = float(explicit_ev.group(1)) * (sign if not explicit_ev.group(1).startswith(("+", "-")) else 1.0)
        elif stops and (bright or dark):
            word = stops.group(1)
            ev = sign * (STOP_WORDS[word] if word in STOP_WORDS else float(word))
        else:
            ev = sign * 0.5 * degree
    if warm or cool or explicit_mired:
        sign = 1.0 if warm else -1.0 if cool else 1.0
        if explicit_mired:
            value = explicit_mired.group(1)
            mired = float(value) * (sign if not value.startswith(("+", "-")) else 1.0)
        else:
            mired = sign * 20.0 * degree
    change = LightChange(ev=ev, mired=mired, kelvin=float(kelvin.group(1)) if kelvin else None)
    return (None if change.empty else change), True


class _Reading:
    """What the clauses of one message said, gathered."""

    def __init__(self) -> None:
        self.actions: list[str] = []
        self.targets: list[str] = []
        self.regions: list[str] = []
        self.protect: list[str] = []
        self.light = LightChange()
        self.complaint = False


def _read_clause(clause: str, reading: _Reading) -> None:
    regions = []
    for name, pattern in REGION_PATTERNS:
        if re.search(pattern, clause):
            if name == "hands" and re.search(r"\b(left|right) hand\b", clause):
                continue
            regions.append(name)
    protecting = bool(PROTECT.search(clause)) and not FREE_ONLY.search(clause)
    defects = [kind for kind, pattern in DEFECT_PATTERNS if re.search(pattern, clause)]
    if "subjects_swapped" in defects:
        regions = [r for r in regions if r != "face"]  # "swapped faces" names the defect, not a region
    if protecting:
        reading.protect += regions
        return
    reading.regions += regions
    clause = FREE_ONLY.sub(" ", clause)  # "free fixes only" sets a budget, it asks for no repair

    light, ordered = _light(clause)
    if light is not None:
        reading.actions.append("adjust")
        reading.light = LightChange(ev=reading.light.ev + light.ev, mired=reading.light.mired + light.mired,
                                    kelvin=light.kelvin or reading.light.kelvin)
    if not ordered:  # light words in a complaint are defects
        if re.search(r"\b(exposure|darkened|underexposed|overexposed)\b", clause) or (
                COMPLAINT.search(clause) and re.search(rf"\b{EXPOSURE_WORDS}\b", clause)):
            defects.append("exposure_drift")
        if re.search(r"\b(white balance|colou?r cast|cast|colou?rs?|tint)\b", clause) or (
                COMPLAINT.search(clause) and re.search(rf"\b{COLOUR_WORDS}\b", clause)):
            defects.append("color_temperature_drift")
    if "face" in regions and FACE_WRONG.search(clause):
        defects.append("identity_drift")
    for region in regions:
        defects += REGION_KINDS.get(region, ())
    reading.targets += defects
    if defects:
        reading.complaint = True
    for action, pattern in ACTION_PATTERNS:
        if re.search(pattern, clause):
            reading.actions.append(action)
    if CANCEL.search(clause) or (re.search(r"\bstop\b", clause) and light is None and not STOPS.search(clause)):
        reading.actions.append("cancel")
    if APPROVE.search(clause) and not REJECT.search(clause):
        reading.actions.append("approve")
    if REJECT.search(clause):
        reading.actions.append("reject")


def parse_rules(text: str) -> Request:
    """Understand one chat message without a model."""
    norm = normalise(text)
    reading = _Reading()
    clauses = [c.strip() for c in CLAUSE_BREAK.split(norm) if c and c.strip()]
    for clause in clauses:
        _read_clause(clause, reading)

    max_usd = None
    for pattern, scale in MONEY:
        found = pattern.search(norm)
        if found:
            max_usd = float(found.group(1)) * scale
            break
    free_only = bool(FREE_ONLY.search(norm))
    if (max_usd is not None or free_only) and "status" not in reading.actions:
        reading.actions.append("set_budget")

    image_role = None
    if LOOKS_LIKE.search(norm):
        image_role = "reference"
    else:
        for clause in clauses:
            intro = ROLE_INTRO.search(clause)
            if intro:
                rest = clause[intro.end():]
                image_role = next((role for role, pattern in ROLE_NOUNS if re.search(pattern, rest)), None)
                if image_role:
                    break

    actions = reading.actions
    changing = {"check", "repair", "adjust", "undo", "explain", "status", "help"}
    if "approve" in actions and changing & set(actions) and not re.search(r"\bapprove", norm):
        actions = [a for a in actions if a != "approve"]
    if "reject" in actions and "cancel" in actions:
        actions = [a for a in actions if a != "reject"]
    if reading.complaint and not ({"check", "explain", "status", "adjust", "undo", "help"} & set(actions)) \
            and image_role is None:
        actions.append("repair")
    undo_all = "undo" in actions and any(UNDO_ALL.search(c) for c in clauses if re.search(ACTION_PATTERNS[2][1], c))
    return Request(actions=actions, targets=reading.targets, regions=reading.regions, protect=reading.protect,
                   light=reading.light, max_usd=max_usd, free_only=free_only, undo_all=undo_all,
                   image_role=image_role).canonical()
