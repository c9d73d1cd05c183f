"""``ReceiptKeyService``: the public keys of signed receipts as a JWK Set (ARCHITECTURE §8).

Public keys only, so the call needs no admin key (its access rule is ``public``): a tool server fetches
them through Envoy (``GET /v1/admin/receipt-keys``) with nothing but the gateway's URL.
"""

from __future__ import annotations

from authz.api.admin.v1 import receipt_key_service_pb2 as pb
from authz.api.admin.v1 import receipt_key_service_pb2_grpc as pb_grpc
from authz.config import ReceiptConfig
from authz.receipts import derived_keys
from authz.server.admin._common import AdminRuntime

#: ``AdminRuntime.extras`` key holding TESSERA_RECEIPT_KIDS (active first).
RECEIPT_KIDS = "receipt_kids"
#: ``AdminRuntime.extras`` key holding the issuer of receipts for Tessera's own tool-server requests
#: (:func:`authz.receipts.self_receipt_issuer`), or None when receipts are off.
SELF_RECEIPTS = "self_receipts"


class ReceiptKeyService(pb_grpc.ReceiptKeyServiceServicer):
    def __init__(self, runtime: AdminRuntime):
        kids = runtime.extras.get(RECEIPT_KIDS, ReceiptConfig().kids)
        keys = derived_keys(kids, runtime.keyring.derive_subkey)
        # Derived once: the keys change only with the configuration (a restart).
        self._response = pb.GetReceiptKeysResponse(keys=[pb.ReceiptJwk(**key.jwk()) for key in keys])

    async def GetReceiptKeys(self, request: pb.GetReceiptKeysRequest, context) -> pb.GetReceiptKeysResponse:
        return self._response
