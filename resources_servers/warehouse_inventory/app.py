"""warehouse_inventory: a stateful stock-keeping task scored on the inventory the session ends with.

Each rollout gets its own inventory, loaded from the row's `initial_stock` by `/seed_session`. The model reads and
changes it with `check_stock`, `ship_order` and `restock`; a refused operation (not enough stock, an unknown item, a
non-positive quantity) answers with an error object the model can read and act on, and changes nothing. `/verify`
compares the final inventory with the row's `expected_stock`, reports it with every operation of the session, and
releases the session.
"""

from typing import ClassVar, Literal

from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel, Field, NonNegativeInt

from nemo_gym.base_resources_server import (
    BaseResourcesServerConfig,
    BaseRunRequest,
    BaseSeedSessionRequest,
    BaseSeedSessionResponse,
    BaseVerifyRequest,
    BaseVerifyResponse,
    ReverifyMode,
    SimpleResourcesServer,
)
from nemo_gym.server_utils import SESSION_ID_KEY


class WarehouseInventoryResourcesServerConfig(BaseResourcesServerConfig):
    # The score needs the session's inventory, which /verify releases: a stored trajectory cannot be scored again.
    REVERIFY_MODE: ClassVar[ReverifyMode] = ReverifyMode.UNSUPPORTED
    partial_credit: bool = Field(
        default=True,
        description="True: reward = share of items whose final count is right. False: 1.0 only if all are right.",
    )


# ----------------------------------------------------------------------------------------------------- tool models


class CheckStockRequest(BaseModel):
    item: str


class ShipOrderRequest(BaseModel):
    item: str
    quantity: int


class RestockRequest(BaseModel):
    item: str
    quantity: int


class ToolError(BaseModel):
    """What went wrong and how to fix it, as the model reads it in the tool output."""

    code: Literal["unknown_item", "insufficient_stock", "invalid_quantity"]
    message: str


class ToolErrorResponse(BaseModel):
    error: ToolError


class StockResponse(BaseModel):
    item: str
    quantity: int


class ShipOrderResponse(BaseModel):
    item: str
    shipped: int
    remaining: int


class RestockResponse(BaseModel):
    item: str
    added: int
    quantity: int


ToolName = Literal["check_stock", "ship_order", "restock"]


class Operation(BaseModel):
    """One tool call of the session, as /verify reports it; `applied` is False when it was refused."""

    tool: ToolName
    item: str
    quantity: int | None = None
    applied: bool
    error_code: str | None = None


class WarehouseSession(BaseModel):
    stock: dict[str, int]
    operations: list[Operation] = Field(default_factory=list)


# ------------------------------------------------------------------------------------------------ rollout models


class WarehouseInventorySeedSessionRequest(BaseSeedSessionRequest):
    initial_stock: dict[str, NonNegativeInt]


class WarehouseInventoryRunRequest(BaseRunRequest):
    initial_stock: dict[str, NonNegativeInt]
    expected_stock: dict[str, NonNegativeInt]


class WarehouseInventoryVerifyRequest(WarehouseInventoryRunRequest, BaseVerifyRequest):
    pass


class WarehouseInventoryVerifyResponse(BaseVerifyResponse):
    final_stock: dict[str, int]
    operations: list[Operation]
    items_correct: int
    items_total: int
    mismatched_items: list[str]


class WarehouseInventoryResourcesServer(SimpleResourcesServer):
    config: WarehouseInventoryResourcesServerConfig
    session_id_to_warehouse: dict[str, WarehouseSession] = Field(default_factory=dict)

    def setup_webserver(self) -> FastAPI:
        app = super().setup_webserver()
        app.post("/check_stock")(self.check_stock)
        app.post("/ship_order")(self.ship_order)
        app.post("/restock")(self.restock)
        return app

    async def seed_session(
        self, request: Request, body: WarehouseInventorySeedSessionRequest
    ) -> BaseSeedSessionResponse:
        """Seeding starts the session over from the row's stock (a second seed discards earlier operations)."""
        self.session_id_to_warehouse[request.session[SESSION_ID_KEY]] = WarehouseSession(stock=dict(body.initial_stock))
        return BaseSeedSessionResponse()

    # ----------------------------------------------------------------------------------------------------- tools

    async def check_stock(self, request: Request, body: CheckStockRequest) -> StockResponse | ToolErrorResponse:
        session = self._session(request)
        item = _find_item(session.stock, body.item)
        if item is None:
            return _refuse(session, "check_stock", body.item, None, _unknown_item(session.stock, body.item))
        session.operations.append(Operation(tool="check_stock", item=item, applied=True))
        return StockResponse(item=item, quantity=session.stock[item])

    async def ship_order(self, request: Request, body: ShipOrderRequest) -> ShipOrderResponse | ToolErrorResponse:
        session = self._session(request)
        item = _find_item(session.stock, body.item)
        if item is None:
            return _refuse(session, "ship_order", body.item, body.quantity, _unknown_item(session.stock, body.item))
        if body.quantity <= 0:
            return _refuse(session, "ship_order", item, body.quantity, _invalid_quantity("ship_order", body.quantity))
        available = session.stock[item]
        if body.quantity > available:
            message = (
                f"Cannot ship {body.quantity} {item}: only {available} in stock. Nothing was shipped. "
                f"Ship at most {available}, or restock {item} first."
            )
            refusal = ToolErrorResponse(error=ToolError(code="insufficient_stock", message=message))
            return _refuse(session, "ship_order", item, body.quantity, refusal)
        session.stock[item] = available - body.quantity
        session.operations.append(Operation(tool="ship_order", item=item, quantity=body.quantity, applied=True))
        return ShipOrderResponse(item=item, shipped=body.quantity, remaining=session.stock[item])

    async def restock(self, request: Request, body: RestockRequest) -> RestockResponse | ToolErrorResponse:
        session = self._session(request)
        item = _find_item(session.stock, body.item)
        if item is None:
            return _refuse(session, "restock", body.item, body.quantity, _unknown_item(session.stock, body.item))
        if body.quantity <= 0:
            return _refuse(session, "restock", item, body.quantity, _invalid_quantity("restock", body.quantity))
        session.stock[item] += body.quantity
        session.operations.append(Operation(tool="restock", item=item, quantity=body.quantity, applied=True))
        return RestockResponse(item=item, added=body.quantity, quantity=session.stock[item])

    # ---------------------------------------------------------------------------------------------------- verify

    async def verify(self, request: Request, body: WarehouseInventoryVerifyRequest) -> WarehouseInventoryVerifyResponse:
        session = self.session_id_to_warehouse.pop(request.session[SESSION_ID_KEY], None)
        if session is None:
            return WarehouseInventoryVerifyResponse(
                **body.model_dump(),
                reward=0.0,
                final_stock={},
                operations=[],
                items_correct=0,
                items_total=len(body.expected_stock),
                mismatched_items=sorted(body.expected_stock),
                failure_reason=(
                    "This session was never seeded (or was already verified): POST /seed_session with the row "
                    "before the tool calls and /verify, in the same session."
                ),
            )
        items = sorted(set(body.expected_stock) | set(session.stock))
        mismatched = [i for i in items if session.stock.get(i, 0) != body.expected_stock.get(i, 0)]
        correct = len(items) - len(mismatched)
        if not items:
            reward = 1.0
        elif self.config.partial_credit:
            reward = correct / len(items)
        else:
            reward = float(not mismatched)
        return WarehouseInventoryVerifyResponse(
            **body.model_dump(),
            reward=reward,
            final_stock=session.stock,
            operations=session.operations,
            items_correct=correct,
            items_total=len(items),
            mismatched_items=mismatched,
        )

    def _session(self, request: Request) -> WarehouseSession:
        session = self.session_id_to_warehouse.get(request.session[SESSION_ID_KEY])
        if session is None:
            raise HTTPException(
                status_code=400,
                detail="Session not initialized: POST /seed_session with the row (its initial_stock) first.",
            )
        return session


def _refuse(
    session: WarehouseSession, tool: ToolName, item: str, quantity: int | None, refusal: ToolErrorResponse
) -> ToolErrorResponse:
    """Log a refused call (it changed nothing) and hand its error object back to the model."""
    session.operations.append(
        Operation(tool=tool, item=item, quantity=quantity, applied=False, error_code=refusal.error.code)
    )
    return refusal


def _find_item(stock: dict[str, int], name: str) -> str | None:
    """The stock's own spelling of `name`, matched without regard to case or surrounding spaces."""
    wanted = " ".join(name.split()).casefold()
    return next((item for item in stock if " ".join(item.split()).casefold() == wanted), None)


def _unknown_item(stock: dict[str, int], name: str) -> ToolErrorResponse:
    known = ", ".join(sorted(stock)) or "none"
    return ToolErrorResponse(
        error=ToolError(
            code="unknown_item",
            message=f"No item named {name!r} in this warehouse. Items stocked here: {known}.",
        )
    )


def _invalid_quantity(tool: str, quantity: int) -> ToolErrorResponse:
    return ToolErrorResponse(
        error=ToolError(
            code="invalid_quantity",
            message=f"{tool} needs a quantity of at least 1, got {quantity}. Nothing was changed.",
        )
    )


if __name__ == "__main__":
    WarehouseInventoryResourcesServer.run_webserver()
