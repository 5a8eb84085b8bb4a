from typing import Any
from unittest.mock import MagicMock

from app import (
    Operation,
    WarehouseInventoryResourcesServer,
    WarehouseInventoryResourcesServerConfig,
    WarehouseInventoryVerifyRequest,
    WarehouseSession,
)
from fastapi import Request
from fastapi.testclient import TestClient

from nemo_gym.openai_utils import NeMoGymResponse, NeMoGymResponseCreateParamsNonStreaming
from nemo_gym.server_utils import SESSION_ID_KEY, ServerClient

INITIAL_STOCK = {"Lantern": 12, "Compass": 4, "Sleeping Bag": 3}


def _server(partial_credit: bool = True) -> WarehouseInventoryResourcesServer:
    config = WarehouseInventoryResourcesServerConfig(
        host="0.0.0.0", port=8080, entrypoint="", name="", partial_credit=partial_credit
    )
    return WarehouseInventoryResourcesServer(config=config, server_client=MagicMock(spec=ServerClient))


def _row(initial: dict[str, int], expected: dict[str, int]) -> dict[str, Any]:
    return {
        "responses_create_params": {"input": [{"role": "user", "content": "Ship 2 units of the Lantern."}]},
        "initial_stock": initial,
        "expected_stock": expected,
    }


def _response() -> NeMoGymResponse:
    return NeMoGymResponse(
        id="resp_warehouse",
        created_at=0.0,
        model="test-model",
        object="response",
        output=[],
        parallel_tool_calls=False,
        tool_choice="auto",
        tools=[],
    )


def _verify_body(initial: dict[str, int], expected: dict[str, int]) -> dict[str, Any]:
    return {**_row(initial, expected), "response": _response().model_dump(mode="json")}


def _seeded_client(server: WarehouseInventoryResourcesServer, stock: dict[str, int]) -> TestClient:
    client = TestClient(server.setup_webserver())
    assert client.post("/seed_session", json=_row(stock, stock)).status_code == 200
    return client


def _request(session_id: str) -> Request:
    request = MagicMock(spec=Request)
    request.session = {SESSION_ID_KEY: session_id}
    return request


class TestApp:
    def test_sanity(self) -> None:
        server = _server()
        assert server.config.partial_credit is True

    async def test_reverify_mode_is_unsupported_because_verify_needs_the_session(self) -> None:
        client = TestClient(_server().setup_webserver())
        assert client.get("/reverify_mode").json() == "unsupported"

    # ---------------------------------------------------------------------------------------------------- tools

    async def test_check_stock_reads_the_seeded_stock_whatever_the_case_of_the_name(self) -> None:
        client = _seeded_client(_server(), INITIAL_STOCK)
        assert client.post("/check_stock", json={"item": "Lantern"}).json() == {"item": "Lantern", "quantity": 12}
        assert client.post("/check_stock", json={"item": "  sleeping BAG "}).json() == {
            "item": "Sleeping Bag",
            "quantity": 3,
        }

    async def test_ship_order_removes_the_units_from_stock(self) -> None:
        client = _seeded_client(_server(), INITIAL_STOCK)
        shipped = client.post("/ship_order", json={"item": "Lantern", "quantity": 5}).json()
        assert shipped == {"item": "Lantern", "shipped": 5, "remaining": 7}
        assert client.post("/check_stock", json={"item": "Lantern"}).json()["quantity"] == 7

    async def test_ship_order_refuses_with_a_readable_error_when_stock_is_short(self) -> None:
        client = _seeded_client(_server(), INITIAL_STOCK)
        answer = client.post("/ship_order", json={"item": "Compass", "quantity": 9})
        assert answer.status_code == 200  # the model reads the error object as the tool output
        error = answer.json()["error"]
        assert error["code"] == "insufficient_stock"
        assert "only 4 in stock" in error["message"] and "restock Compass first" in error["message"]
        assert client.post("/check_stock", json={"item": "Compass"}).json()["quantity"] == 4

    async def test_shipping_the_whole_stock_is_allowed(self) -> None:
        client = _seeded_client(_server(), INITIAL_STOCK)
        assert client.post("/ship_order", json={"item": "Compass", "quantity": 4}).json()["remaining"] == 0

    async def test_restock_adds_units(self) -> None:
        client = _seeded_client(_server(), INITIAL_STOCK)
        assert client.post("/restock", json={"item": "compass", "quantity": 6}).json() == {
            "item": "Compass",
            "added": 6,
            "quantity": 10,
        }

    async def test_unknown_items_are_refused_by_every_tool_with_the_list_of_stocked_items(self) -> None:
        client = _seeded_client(_server(), INITIAL_STOCK)
        for path, arguments in [
            ("/check_stock", {"item": "Kayak"}),
            ("/ship_order", {"item": "Kayak", "quantity": 1}),
            ("/restock", {"item": "Kayak", "quantity": 1}),
        ]:
            error = client.post(path, json=arguments).json()["error"]
            assert error["code"] == "unknown_item"
            assert error["message"] == (
                "No item named 'Kayak' in this warehouse. Items stocked here: Compass, Lantern, Sleeping Bag."
            )

    async def test_non_positive_quantities_are_refused_and_change_nothing(self) -> None:
        client = _seeded_client(_server(), INITIAL_STOCK)
        for path, quantity in [("/ship_order", 0), ("/restock", -3)]:
            error = client.post(path, json={"item": "Lantern", "quantity": quantity}).json()["error"]
            assert error["code"] == "invalid_quantity"
            assert f"got {quantity}" in error["message"]
        assert client.post("/check_stock", json={"item": "Lantern"}).json()["quantity"] == 12

    async def test_tool_arguments_of_the_wrong_shape_get_a_422(self) -> None:
        client = _seeded_client(_server(), INITIAL_STOCK)
        assert client.post("/ship_order", json={"item": "Lantern"}).status_code == 422
        assert client.post("/ship_order", json={"item": "Lantern", "quantity": "lots"}).status_code == 422

    async def test_tools_before_seed_session_are_rejected_with_how_to_fix(self) -> None:
        client = TestClient(_server().setup_webserver())
        answer = client.post("/check_stock", json={"item": "Lantern"})
        assert answer.status_code == 400
        assert "POST /seed_session" in answer.json()["detail"]

    async def test_seed_session_rejects_negative_stock(self) -> None:
        client = TestClient(_server().setup_webserver())
        assert client.post("/seed_session", json=_row({"Lantern": -1}, {"Lantern": 0})).status_code == 422

    async def test_seeding_again_starts_the_session_over(self) -> None:
        server = _server()
        client = _seeded_client(server, INITIAL_STOCK)
        client.post("/ship_order", json={"item": "Lantern", "quantity": 2})
        client.post("/seed_session", json=_row({"Lantern": 1}, {"Lantern": 1}))
        assert client.post("/check_stock", json={"item": "Lantern"}).json()["quantity"] == 1
        [session] = server.session_id_to_warehouse.values()
        assert session.operations == [Operation(tool="check_stock", item="Lantern", applied=True)]

    async def test_two_sessions_are_isolated(self) -> None:
        server = _server()
        first = _seeded_client(server, {"Lantern": 5})
        second = _seeded_client(server, {"Lantern": 5, "Tent": 2})
        first.post("/ship_order", json={"item": "Lantern", "quantity": 3})
        second.post("/restock", json={"item": "Lantern", "quantity": 10})
        assert first.post("/check_stock", json={"item": "Lantern"}).json()["quantity"] == 2
        assert second.post("/check_stock", json={"item": "Lantern"}).json()["quantity"] == 15
        assert first.post("/check_stock", json={"item": "Tent"}).json()["error"]["code"] == "unknown_item"

        first_result = first.post("/verify", json=_verify_body({"Lantern": 5}, {"Lantern": 2})).json()
        second_result = second.post("/verify", json=_verify_body({"Lantern": 5, "Tent": 2}, {"Lantern": 5, "Tent": 2}))
        assert first_result["reward"] == 1.0 and first_result["final_stock"] == {"Lantern": 2}
        assert second_result.json()["final_stock"] == {"Lantern": 15, "Tent": 2}
        assert second_result.json()["reward"] == 0.5

    # --------------------------------------------------------------------------------------------------- verify

    async def test_verify_gives_full_credit_and_reports_the_inventory_and_operations(self) -> None:
        server = _server()
        client = _seeded_client(server, {"Lantern": 12, "Compass": 4})
        client.post("/check_stock", json={"item": "Compass"})
        client.post("/ship_order", json={"item": "Compass", "quantity": 9})
        client.post("/restock", json={"item": "Compass", "quantity": 10})
        client.post("/ship_order", json={"item": "Compass", "quantity": 9})

        result = client.post("/verify", json=_verify_body({"Lantern": 12, "Compass": 4}, {"Lantern": 12, "Compass": 5}))
        body = result.json()
        assert body["reward"] == 1.0
        assert body["final_stock"] == {"Lantern": 12, "Compass": 5}
        assert (body["items_correct"], body["items_total"], body["mismatched_items"]) == (2, 2, [])
        assert body["operations"] == [
            {"tool": "check_stock", "item": "Compass", "quantity": None, "applied": True, "error_code": None},
            {
                "tool": "ship_order",
                "item": "Compass",
                "quantity": 9,
                "applied": False,
                "error_code": "insufficient_stock",
            },
            {"tool": "restock", "item": "Compass", "quantity": 10, "applied": True, "error_code": None},
            {"tool": "ship_order", "item": "Compass", "quantity": 9, "applied": True, "error_code": None},
        ]
        assert body["expected_stock"] == {"Lantern": 12, "Compass": 5}
        assert server.session_id_to_warehouse == {}

    async def test_verify_releases_the_session_so_a_second_verify_scores_zero(self) -> None:
        client = _seeded_client(_server(), {"Lantern": 1})
        assert client.post("/verify", json=_verify_body({"Lantern": 1}, {"Lantern": 1})).json()["reward"] == 1.0
        again = client.post("/verify", json=_verify_body({"Lantern": 1}, {"Lantern": 1})).json()
        assert again["reward"] == 0.0
        assert "never seeded (or was already verified)" in again["failure_reason"]
        assert client.post("/check_stock", json={"item": "Lantern"}).status_code == 400

    async def test_verify_gives_partial_credit_as_the_share_of_items_right(self) -> None:
        server = _server()
        server.session_id_to_warehouse["s1"] = WarehouseSession(stock={"Lantern": 10, "Compass": 4, "Tent": 1})
        body = WarehouseInventoryVerifyRequest.model_validate(
            _verify_body({"Lantern": 12, "Compass": 4, "Tent": 1}, {"Lantern": 12, "Compass": 4, "Tent": 0})
        )
        result = await server.verify(_request("s1"), body)
        assert result.reward == 1 / 3
        assert (result.items_correct, result.items_total) == (1, 3)
        assert result.mismatched_items == ["Lantern", "Tent"]
        assert result.final_stock == {"Lantern": 10, "Compass": 4, "Tent": 1}

    async def test_verify_without_partial_credit_is_all_or_nothing(self) -> None:
        server = _server(partial_credit=False)
        server.session_id_to_warehouse["s1"] = WarehouseSession(stock={"Lantern": 10, "Compass": 4})
        body = WarehouseInventoryVerifyRequest.model_validate(
            _verify_body({"Lantern": 12, "Compass": 4}, {"Lantern": 12, "Compass": 4})
        )
        result = await server.verify(_request("s1"), body)
        assert result.reward == 0.0
        assert result.items_correct == 1 and result.mismatched_items == ["Lantern"]

    async def test_verify_counts_an_item_missing_from_either_side_as_zero_units(self) -> None:
        server = _server()
        server.session_id_to_warehouse["s1"] = WarehouseSession(stock={"Lantern": 0, "Compass": 2})
        body = WarehouseInventoryVerifyRequest.model_validate(
            _verify_body({"Lantern": 3, "Compass": 2}, {"Compass": 2, "Tent": 0})
        )
        result = await server.verify(_request("s1"), body)
        assert result.reward == 1.0
        assert result.items_total == 3

    async def test_verify_of_a_session_never_seeded_scores_zero_and_says_why(self) -> None:
        server = _server()
        body = WarehouseInventoryVerifyRequest.model_validate(_verify_body({"Lantern": 1}, {"Lantern": 1}))
        result = await server.verify(_request("never-seeded"), body)
        assert result.reward == 0.0
        assert result.final_stock == {} and result.operations == []
        assert result.mismatched_items == ["Lantern"]
        assert result.failure_reason is not None and "POST /seed_session" in result.failure_reason

    async def test_verify_echoes_the_request(self) -> None:
        server = _server()
        server.session_id_to_warehouse["s1"] = WarehouseSession(stock={"Lantern": 1})
        body = WarehouseInventoryVerifyRequest.model_validate(_verify_body({"Lantern": 1}, {"Lantern": 1}))
        result = await server.verify(_request("s1"), body)
        assert result.responses_create_params == NeMoGymResponseCreateParamsNonStreaming.model_validate(
            _row({}, {})["responses_create_params"]
        )
        assert result.response.id == "resp_warehouse"
        assert result.initial_stock == {"Lantern": 1}
