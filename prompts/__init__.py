"""Repair prompt templates, one per repair of the failure library, and their renderer."""

from fixloop.prompts.render import (
    MissingSlotError,
    RenderedPrompt,
    Template,
    TemplateError,
    load_template,
    render,
    template_names,
)

__all__ = ["MissingSlotError", "RenderedPrompt", "Template", "TemplateError", "load_template", "render",
           "template_names"]
