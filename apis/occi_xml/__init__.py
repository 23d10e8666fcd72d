"""OpenNebula's pre-standard "OCCI" (OCCI-XML), the dialect of ONE's occi-server (ONE 2.0
to 4.6) that apache-libcloud's OpenNebula driver speaks (reference occi.md §4.8).

Served on its own port (`OCCI_XML_PORT`, default 4568): its paths (`/compute/5`) would
clash with the OGF OCCI front door on the main port. Resources: `/compute` (VMs),
`/storage` (images), `/network` (virtual networks) and `/instance_type` (the instance-type
table of nubo.conf). Modules: `app` (routes, one wrapper around every handler), `auth`
(HTTP Basic with the SHA1 hex of the password, or the password), `documents` (safe XML
reading and the request's document), `render` (the XML answers), `errors`, and one module
per resource.
"""
