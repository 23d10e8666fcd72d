"""OpenNebula's context variables: CONTEXT values that name other attributes of the VM,
resolved when the context CD is made (core.dispatcher, for the prolog).

    $VMID                       the VM's id
    $NAME, $MEMORY, ...         a single-valued attribute of the VM template
    $NIC[IP]                    an attribute of the VM's first NIC (any vector: DISK, ...)
    $NIC[IP, NETWORK="public"]  ... of the first NIC whose NETWORK is "public"

So `ETH0_IP = "$NIC[IP]"` hands the guest the address its NIC leased. A variable that names
nothing becomes empty, as in OpenNebula; a `$` not followed by a name stays as it is.
"""

from __future__ import annotations

import re

from core.template import Template

_VARIABLE = re.compile(
    r'\$([A-Za-z_][A-Za-z0-9_]*)'
    r'(?:\[\s*([A-Za-z0-9_]+)\s*(?:,\s*([A-Za-z0-9_]+)\s*=\s*"([^"]*)"\s*)?\])?')


def resolve(tmpl: Template, vm_id: int) -> dict[str, str] | None:
    """The CONTEXT vector with its variables replaced (None when the VM has no CONTEXT)."""
    context = tmpl.vector("CONTEXT")
    if context is None:
        return None

    def value(found: re.Match[str]) -> str:
        name, attribute, key, wanted = found.groups()
        name = name.upper()
        if attribute is None:
            if name == "VMID":
                return str(vm_id)
            return tmpl.get(name) or ""
        for vector in tmpl.vectors(name):
            if key is None or vector.get(key.upper()) == wanted:
                return vector.get(attribute.upper(), "")
        return ""

    return {key: _VARIABLE.sub(value, text) for key, text in context.items()}
