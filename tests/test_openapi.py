"""openapi/openapi.json is generated from the app; this fails when it drifts."""

from pathlib import Path

from app.cli.admin import openapi_text

SPEC = Path(__file__).resolve().parents[1] / "openapi" / "openapi.json"


def test_committed_openapi_matches_the_app() -> None:
    assert SPEC.read_text() == openapi_text(), (
        "openapi/openapi.json is out of date: run `tlsrpt export-openapi -o openapi/openapi.json`"
    )


def test_ingest_body_is_documented_with_rfc_names() -> None:
    import json

    spec = json.loads(openapi_text())
    body = spec["paths"]["/v1/results"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/ResultsIn"}
    result = spec["components"]["schemas"]["ResultIn"]["properties"]
    assert {"policy", "result-type", "sending-mta-ip", "count", "report-delivery"} <= set(result)
