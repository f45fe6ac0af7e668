#!/usr/bin/env python3
"""Validates a SAML metadata document against the OASIS SAML 2.0 metadata schema.

Uses the XSDs that ship with pysaml2 (metadata, assertion, XML Signature, XML Encryption),
resolved locally: no network. Exit 0 when valid; otherwise prints every error and exits 1.
Usage: validate_metadata.py FILE
"""

import sys
from importlib.resources import files

import xmlschema

import saml2.data.schemas


def main(path):
    schemas = files(saml2.data.schemas)
    at = lambda name: str(schemas.joinpath(name))
    schema = xmlschema.XMLSchema(
        at("saml-schema-metadata-2.0.xsd"),
        locations={
            "http://www.w3.org/XML/1998/namespace": at("xml.xsd"),
            "http://www.w3.org/2001/04/xmlenc#": at("xenc-schema.xsd"),
            "http://www.w3.org/2009/xmlenc11#": at("xenc-schema-11.xsd"),
            "http://www.w3.org/2000/09/xmldsig#": at("xmldsig-core-schema.xsd"),
            "urn:oasis:names:tc:SAML:2.0:assertion": at("saml-schema-assertion-2.0.xsd"),
            "urn:oasis:names:tc:SAML:2.0:metadata": at("saml-schema-metadata-2.0.xsd"),
        },
        allow="sandbox",
        use_fallback=False,
    )
    errors = list(schema.iter_errors(path))
    for error in errors:
        print(f"{error.path}: {error.reason}")
    return 1 if errors else 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(sys.argv[1]))
