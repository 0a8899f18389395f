"""The asyncio driver (UDP and TCP sockets) for the pure cluster-DNS core in kubewire.dns."""
