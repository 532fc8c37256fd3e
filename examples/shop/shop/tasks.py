"""The shop's tasks; ``task_routes`` in ``shop.celery`` says where each goes."""

from __future__ import annotations

from .celery import app

__all__ = ["place_order", "send_receipt"]


@app.task
def place_order(order_id: int, quantity: int, unit_price_cents: int) -> dict[str, int]:
    """Book an order; returns its total."""
    return {"order_id": order_id, "total_cents": quantity * unit_price_cents}


@app.task
def send_receipt(order_id: int, address: str) -> str:
    """Mail the receipt of an order; returns what was sent where."""
    return f"receipt {order_id} -> {address}"
