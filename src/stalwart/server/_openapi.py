"""The OpenAPI 3 document of the HTTP API, served at GET /openapi.json."""

from __future__ import annotations

from typing import Any

_ERROR = {
    "description": "error",
    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
}
_KEY = {"name": "key", "in": "path", "required": True, "schema": {"type": "string", "maxLength": 1024},
        "description": "The key (UTF-8, may contain '/')."}  # fmt: skip
_CONSISTENCY = {
    "name": "consistency", "in": "query", "required": False,
    "schema": {"type": "string", "enum": ["linearizable", "lease", "stale"], "default": "linearizable"},
}  # fmt: skip
_TTL = {"name": "ttl_s", "in": "query", "required": False,
        "schema": {"type": "number", "exclusiveMinimum": 0},
        "description": "Expire the key this many seconds after the write (log clock)."}  # fmt: skip
_REDIRECT = {"description": "Not the leader: retry at Location (same method and body)."}
_UNAVAILABLE = {"description": "No leader known, or busy; see Retry-After.", **{"content": _ERROR["content"]}}


def _json(ref: str) -> dict[str, Any]:
    return {"content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{ref}"}}}}


OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "stalwart key-value store",
        "version": "1",
        "description": "Linearizable replicated key-value store on Raft. Values are arbitrary bytes: "
        "request bodies of PUT are the raw value; JSON answers carry values base64-encoded.",
    },
    "paths": {
        "/v1/kv/{key}": {
            "get": {
                "summary": "Read one key", "parameters": [_KEY, _CONSISTENCY],
                "responses": {"200": {"description": "the key", **_json("KeyValue")},
                              "307": _REDIRECT, "404": _ERROR, "503": _UNAVAILABLE},
            },
            "put": {
                "summary": "Set a key", "parameters": [_KEY, _TTL],
                "requestBody": {"required": True, "content": {"application/octet-stream": {
                    "schema": {"type": "string", "format": "binary", "maxLength": 1048576}}}},
                "responses": {"200": {"description": "written", **_json("Revision")}, "307": _REDIRECT,
                              "400": _ERROR, "413": {"description": "value too large"},
                              "503": _UNAVAILABLE, "504": {"description": "outcome unknown", **_ERROR}},
            },
            "delete": {
                "summary": "Delete a key", "parameters": [_KEY],
                "responses": {"200": {"description": "deleted (or absent)", **_json("Deleted")},
                              "307": _REDIRECT, "503": _UNAVAILABLE, "504": _ERROR},
            },
        },
        "/v1/kv/{key}/cas": {
            "post": {
                "summary": "Compare and set", "parameters": [_KEY, _TTL],
                "requestBody": {"required": True, **_json("CasRequest")},
                "responses": {"200": {"description": "compared", **_json("CasResult")}, "307": _REDIRECT,
                              "400": _ERROR, "503": _UNAVAILABLE, "504": _ERROR},
            },
        },
        "/v1/kv": {
            "get": {
                "summary": "Prefix scan in key order",
                "parameters": [
                    {"name": "prefix", "in": "query", "schema": {"type": "string", "default": ""}},
                    {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1,
                                                                "maximum": 10000, "default": 1000}},
                    _CONSISTENCY,
                ],
                "responses": {"200": {"description": "keys", **_json("Scan")}, "307": _REDIRECT,
                              "503": _UNAVAILABLE},
            },
        },
        "/v1/watch": {
            "get": {
                "summary": "Changes under a prefix after a revision, as server-sent events",
                "description": "Events `put`, `delete` (data: Event JSON, id: revision); `compacted` "
                "when the asked-for revisions are no longer kept (the stream then ends).",
                "parameters": [
                    {"name": "prefix", "in": "query", "schema": {"type": "string", "default": ""}},
                    {"name": "since", "in": "query",
                     "schema": {"type": "integer", "minimum": 0, "default": 0}},
                ],
                "responses": {"200": {"description": "event stream",
                                      "content": {"text/event-stream": {"schema": {"type": "string"}}}}},
            },
        },
        "/v1/status": {"get": {"summary": "This node's Raft and store status",
                               "responses": {"200": {"description": "status", **_json("Status")}}}},
        "/metrics": {"get": {"summary": "Prometheus metrics",
                             "responses": {"200": {"description": "text exposition format"}}}},
        "/openapi.json": {"get": {"summary": "This document",
                                  "responses": {"200": {"description": "OpenAPI 3"}}}},
    },
    "components": {
        "schemas": {
            "Error": {"type": "object", "properties": {"error": {"type": "string"}}, "required": ["error"]},
            "KeyValue": {
                "type": "object",
                "properties": {
                    "revision": {"type": "integer", "description": "store revision the read saw"},
                    "key": {"type": "string"}, "value": {"type": "string", "format": "byte"},
                    "create_revision": {"type": "integer"}, "mod_revision": {"type": "integer"},
                    "version": {"type": "integer"}, "expires_at_ms": {"type": "integer", "nullable": True},
                },
            },
            "Revision": {"type": "object", "properties": {"revision": {"type": "integer"}}},
            "Deleted": {"type": "object", "properties": {"deleted": {"type": "boolean"},
                                                         "revision": {"type": "integer"}}},
            "CasRequest": {
                "type": "object", "required": ["value"],
                "properties": {"expected": {"type": "string", "format": "byte", "nullable": True,
                                            "description": "base64; null: the key must be absent"},
                               "value": {"type": "string", "format": "byte"}},
            },
            "CasResult": {"type": "object", "properties": {
                "swapped": {"type": "boolean"}, "revision": {"type": "integer"},
                "current": {"type": "string", "format": "byte", "nullable": True}}},
            "Scan": {"type": "object", "properties": {
                "revision": {"type": "integer"},
                "items": {"type": "array", "items": {"$ref": "#/components/schemas/KeyValue"}}}},
            "Status": {"type": "object", "additionalProperties": True},
        }
    },
}  # fmt: skip
