"""What both credit-grants services share: errors, decimals, clocks, the gRPC
server kit and the database kit. Nothing here knows about catalogs or grants."""
