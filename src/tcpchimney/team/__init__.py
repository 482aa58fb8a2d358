"""NIC teaming: IEEE 802.1AX LACP (wire codec in ``lacpdu``, sans-IO state machines in ``lacp``)."""
