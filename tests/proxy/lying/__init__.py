"""The parts of ``tests.proxy.lying_upstream`` (import from there): what the server is told
to do wrong (``lies``) and what it puts on the wire (``wire``)."""
