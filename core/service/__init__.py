"""The operations every front door calls, one function per use case.

Each function takes the Cloud context and the authenticated Caller first, then
keyword-only arguments; it checks permissions, writes the change and any driver work in
one transaction, wakes the loops, and returns. Nothing here waits on a hypervisor.
"""
