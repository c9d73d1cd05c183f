"""The demo's domain: an in-memory invoice book and the four tool functions over it.

The methods of :class:`InvoiceBook` named like the tools *are* the tools: the MCP server registers the
bound methods, so their signatures become the input schemas, their return types (TypedDicts) the output
schemas, and ``POST /v1/tool-call`` runs exactly the same code. Anticipated failures are raised as the
SDK's ``ToolError`` subclasses below, which MCP returns as ``isError`` results and the REST endpoint maps
to HTTP statuses.
"""

from __future__ import annotations

import math
import re
import threading
from datetime import UTC, datetime
from typing import Annotated, Literal

from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

# typing_extensions' TypedDict: pydantic needs it for nested TypedDicts before Python 3.12, and the
# SDK silently drops the output schema when pydantic cannot build one.
from typing_extensions import TypedDict

InvoiceStatus = Literal["open", "paid", "overdue"]
INVOICE_STATUSES: tuple[str, ...] = ("open", "paid", "overdue")


class InvalidToolArgument(ToolError):
    """An argument passed the schema but not the tool's own checks (bad IBAN, negative amount...)."""


class InvoiceNotFound(ToolError):
    """The named invoice does not exist (or was deleted)."""


class Invoice(TypedDict):
    invoice_id: str
    customer: str
    amount: float
    currency: str
    status: InvoiceStatus
    issued_on: str
    due_on: str
    iban: str


class InvoiceList(TypedDict):
    invoices: list[Invoice]
    count: int
    total_amount: float


class TransferReceipt(TypedDict):
    transfer_id: str
    status: Literal["executed"]
    amount: float
    currency: str
    iban: str
    memo: str
    executed_at: str


class DeletionReceipt(TypedDict):
    deleted: bool
    invoice: Invoice


_SEED: tuple[Invoice, ...] = (
    Invoice(
        invoice_id="INV-1001",
        customer="ACME GmbH",
        amount=1250.00,
        currency="EUR",
        status="open",
        issued_on="2025-01-06",
        due_on="2025-02-05",
        iban="DE89370400440532013000",
    ),
    Invoice(
        invoice_id="INV-1002",
        customer="Globex Ltd",
        amount=980.50,
        currency="GBP",
        status="paid",
        issued_on="2025-01-10",
        due_on="2025-02-09",
        iban="GB82WEST12345698765432",
    ),
    Invoice(
        invoice_id="INV-1003",
        customer="Initech SA",
        amount=4300.00,
        currency="EUR",
        status="overdue",
        issued_on="2024-11-15",
        due_on="2024-12-15",
        iban="FR1420041010050500013M02606",
    ),
    Invoice(
        invoice_id="INV-1004",
        customer="Umbrella BV",
        amount=75.20,
        currency="EUR",
        status="open",
        issued_on="2025-02-01",
        due_on="2025-03-03",
        iban="NL91ABNA0417164300",
    ),
)

_IBAN_SHAPE = re.compile(r"^[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}$")
_CURRENCY_SHAPE = re.compile(r"^[A-Z]{3}$")
_MAX_TRANSFER = 1_000_000.0


def normalize_iban(raw: str) -> str:
    """Upper-case ``raw`` without spaces and check its shape and ISO 13616 mod-97 checksum."""
    iban = raw.replace(" ", "").upper()
    if not _IBAN_SHAPE.match(iban):
        raise InvalidToolArgument(f"not an IBAN: {raw!r}")
    rearranged = iban[4:] + iban[:4]
    digits = "".join(str(int(ch, 36)) for ch in rearranged)
    if int(digits) % 97 != 1:
        raise InvalidToolArgument(f"IBAN checksum does not match: {raw!r}")
    return iban


class InvoiceBook:
    """A small in-memory ledger: invoices by id and the transfers executed so far.

    Thread-safe: the SDK runs synchronous tools in worker threads.
    """

    def __init__(self, invoices: tuple[Invoice, ...] | list[Invoice] = _SEED) -> None:
        self._lock = threading.Lock()
        self._invoices: dict[str, Invoice] = {inv["invoice_id"]: Invoice(**inv) for inv in invoices}
        self._transfers: list[TransferReceipt] = []

    @property
    def transfers(self) -> list[TransferReceipt]:
        """A copy of the transfers executed so far, oldest first."""
        with self._lock:
            return list(self._transfers)

    # -- the tools -------------------------------------------------------------------------------
    # Docstrings become tool descriptions; keep them short and aimed at a model.

    def read_invoice(
        self, invoice_id: Annotated[str, Field(description="Invoice id, e.g. INV-1001")]
    ) -> Invoice:
        """Read one invoice: customer, amount, currency, status, dates and the payee IBAN."""
        with self._lock:
            invoice = self._invoices.get(invoice_id.strip())
            if invoice is None:
                raise InvoiceNotFound(f"no invoice {invoice_id!r}")
            return Invoice(**invoice)

    def list_invoices(
        self,
        status: Annotated[
            str | None, Field(description="Only invoices with this status: open, paid or overdue")
        ] = None,
    ) -> InvoiceList:
        """List invoices, optionally only those with one status, with their count and total amount."""
        if status is not None and status not in INVOICE_STATUSES:
            raise InvalidToolArgument(f"unknown status {status!r}; use one of {', '.join(INVOICE_STATUSES)}")
        with self._lock:
            chosen = [Invoice(**inv) for inv in self._invoices.values() if status in (None, inv["status"])]
        return InvoiceList(
            invoices=chosen, count=len(chosen), total_amount=round(sum(inv["amount"] for inv in chosen), 2)
        )

    def transfer_funds(
        self,
        amount: Annotated[float, Field(description="Amount to send, greater than 0")],
        iban: Annotated[str, Field(description="Payee IBAN; spaces are ignored")],
        currency: Annotated[str, Field(description="ISO 4217 currency code")] = "EUR",
        memo: Annotated[str, Field(description="Free text for the payee's statement")] = "",
    ) -> TransferReceipt:
        """Send money to an IBAN. Executes immediately and cannot be undone."""
        if not math.isfinite(amount) or amount <= 0:
            raise InvalidToolArgument("amount must be a positive number")
        if amount > _MAX_TRANSFER:
            raise InvalidToolArgument(f"amount exceeds the demo limit of {_MAX_TRANSFER:.0f}")
        if not _CURRENCY_SHAPE.match(currency.upper()):
            raise InvalidToolArgument(f"not a currency code: {currency!r}")
        if len(memo) > 140:
            raise InvalidToolArgument("memo is limited to 140 characters")
        normalized = normalize_iban(iban)
        with self._lock:
            receipt = TransferReceipt(
                transfer_id=f"TRF-{len(self._transfers) + 1:06d}",
                status="executed",
                amount=round(amount, 2),
                currency=currency.upper(),
                iban=normalized,
                memo=memo,
                executed_at=datetime.now(UTC).isoformat(timespec="seconds"),
            )
            self._transfers.append(receipt)
        return receipt

    def delete_invoice(
        self, invoice_id: Annotated[str, Field(description="Invoice id, e.g. INV-1001")]
    ) -> DeletionReceipt:
        """Delete an invoice permanently."""
        with self._lock:
            invoice = self._invoices.pop(invoice_id.strip(), None)
        if invoice is None:
            raise InvoiceNotFound(f"no invoice {invoice_id!r}")
        return DeletionReceipt(deleted=True, invoice=invoice)
