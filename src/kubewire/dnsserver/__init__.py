"""Cluster DNS as CoreDNS runs it: a Corefile's plugin chains (``app.DnsApp``) on an asyncio
UDP/TCP driver (``server.DnsServer``) around the pure core in kubewire.dns. See README.md."""
