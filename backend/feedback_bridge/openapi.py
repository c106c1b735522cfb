"""The OpenAPI 3.1 document of the event API, generated from the marshmallow schemas."""

from __future__ import annotations

from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from . import __version__
from .schemas import (
    EnvelopeSchema,
    ErrorSchema,
    EventSchema,
    EventsResponseSchema,
    HealthSchema,
    StateSchema,
)


def _json(schema: str, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _rate_limited() -> dict[str, Any]:
    response = _json("Error", "A rate limit was reached (code rate_limited); nothing was stored. Retry the "
                              "whole request after Retry-After seconds.")
    response["headers"] = {"Retry-After": {"description": "Seconds to wait.", "required": True,
                                           "schema": {"type": "integer", "minimum": 1}}}
    return response


def build_spec(prefix: str) -> dict[str, Any]:
    spec = APISpec(
        title="feedback-bridge event API", version=__version__, openapi_version="3.1.0",
        plugins=[MarshmallowPlugin()],
        info={"description": "Collects end-user feedback on assistant answers."},
    )
    for name, schema in [("Event", EventSchema), ("Envelope", EnvelopeSchema), ("Error", ErrorSchema),
                         ("EventsResponse", EventsResponseSchema), ("State", StateSchema),
                         ("Health", HealthSchema)]:
        spec.components.schema(name, schema=schema)
    body = {"schema": "Envelope"}
    spec.path(f"{prefix}/events", operations={"post": {
        "summary": "Record a batch of 1-100 widget events.",
        "requestBody": {"required": True, "content": {"application/json": body, "text/plain": body}},
        "responses": {
            "200": _json("EventsResponse", "At least one event was accepted or is a duplicate."),
            "400": _json("Error", "The body is not JSON or not an envelope."),
            "401": _json("EventsResponse", "Every event was rejected for its token."),
            "413": _json("Error", "The body is too large."),
            "415": _json("Error", "The content type is not JSON or text/plain."),
            "422": _json("EventsResponse", "Every event was rejected."),
            "429": _rate_limited(),
        },
    }})
    spec.path(f"{prefix}/state", operations={"get": {
        "summary": "The current feedback of the token's user on the token's message.",
        "parameters": [{"name": "token", "in": "query", "required": True, "schema": {"type": "string"}}],
        "responses": {"200": _json("State", "The state."), "401": _json("Error", "Bad token."),
                      "404": _json("Error", "The token's message is no longer known (code message_unknown)."),
                      "429": _rate_limited()},
    }})
    spec.path(f"{prefix}/health", operations={"get": {
        "summary": "Liveness and database reachability.",
        "responses": {"200": _json("Health", "Healthy."), "503": _json("Health", "Database unreachable.")},
    }})
    spec.path(f"{prefix}/widget.js", operations={"get": {
        "summary": "The widget script.",
        "responses": {"200": {"description": "JavaScript",
                              "content": {"text/javascript": {"schema": {"type": "string"}}}},
                      "304": {"description": "Not modified."}},
    }})
    document = spec.to_dict()
    # The envelope loads each event as raw JSON (so one bad event loses no other); document what an event is.
    document["components"]["schemas"]["Envelope"]["properties"]["events"]["items"] = {
        "$ref": "#/components/schemas/Event"}
    return document
