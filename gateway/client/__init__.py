"""The command line as a client: upload, list and show recordings over HTTP."""

from gateway.client.commands import (
    add_client_commands,
    is_client_command,
    positive_id,
    run_client_command,
)
from gateway.client.http import ClientFailure, ExitStatus, GatewayClient

__all__ = ["ClientFailure", "ExitStatus", "GatewayClient", "add_client_commands",
           "is_client_command", "positive_id", "run_client_command"]
