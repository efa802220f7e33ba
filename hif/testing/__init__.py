"""Shipped for users' tests (as dulwich ships its own): a virtual-time simulation of many agents
landing on one mainline, and a fault/latency wrapper around any store. The product never imports it."""
