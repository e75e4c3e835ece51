"""A Python client of the credit-grants services (docs/client.md): `CatalogClient`, `GrantClient`,
their settings (`ClientSettings`, from arguments or CREDIT_GRANTS_* variables) and errors
(`credit_client.errors`)."""

from credit_client.clients import CatalogClient, GrantClient
from credit_client.errors import ApiError, FieldViolation
from credit_client.settings import ClientSettings

__all__ = ["ApiError", "CatalogClient", "ClientSettings", "FieldViolation", "GrantClient"]
