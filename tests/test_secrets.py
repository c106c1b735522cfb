"""Provider credentials stay on the server: no response of the blueprint ever contains them."""

from __future__ import annotations

from typing import Any

from conftest import register
from feedback_bridge import ProviderAdapter
from feedback_bridge.providers import DeliveryContext
from support import event

SECRET = "sk-live-0123456789abcdef"


class KeyedAdapter(ProviderAdapter):
    """A provider configured with an API key, as the vendor adapters are."""

    def __init__(self, name: str | None = None, *, api_key: str) -> None:
        super().__init__(name, api_key=api_key)
        self.api_key = api_key

    def build_request(self, context: DeliveryContext) -> dict[str, Any]:
        return {"message": context.message.message_id}

    def send(self, request: dict[str, Any]) -> dict[str, Any]:
        return {}


def test_no_response_contains_a_provider_secret(make_app):
    app = make_app(FEEDBACK_PROVIDERS={"keyed": {"adapter": KeyedAdapter, "api_key": SECRET}},
                   FEEDBACK_ALLOWED_ORIGINS=["https://app.example"])
    token = register(app)
    client = app.test_client()
    responses = [
        client.post("/feedback/events", json={"events": [event("thumbs_up", token)]}),
        client.post("/feedback/events", json={"events": [{"id": "x", "type": "nope", "token": token}]}),
        client.post("/feedback/events", data="not json", content_type="text/plain"),
        client.get("/feedback/state", query_string={"token": token}),
        client.get("/feedback/health"),
        client.get("/feedback/openapi.json"),
        client.get("/feedback/widget.js"),
        client.get("/feedback/missing"),
        client.options("/feedback/events", headers={"Origin": "https://app.example",
                                                    "Access-Control-Request-Method": "POST"}),
    ]
    assert responses[0].json["accepted"] == 1 and responses[4].json["providers"] == ["keyed"]
    for response in responses:
        everything = response.get_data(as_text=True) + str(response.headers)
        assert SECRET not in everything, response.request.path
    assert SECRET not in str(app.extensions["feedback_bridge"].adapters["keyed"].describe())
