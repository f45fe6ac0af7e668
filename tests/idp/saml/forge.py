#!/usr/bin/env python3
"""Bends a real signed SAML response (as captured from idp.py) into one negative case.

Usage: forge.py SHAPE --in RESPONSE.xml --out FORGED.xml --workdir IDP_WORKDIR

Shapes that keep the original signature work on the text itself (no re-serialisation, so
what was signed stays byte for byte the same). Shapes that change a signed value are
re-signed with the IdP's own key by `xmlsec1`, so their signature is valid and the check
under test is the one that must refuse them. `selfcheck` runs every shape and reports
which still verify with the IdP's certificate.
"""

import argparse
import datetime
import os
import re
import subprocess
import sys
import tempfile

DSIG = "http://www.w3.org/2000/09/xmldsig#"
RSA_SHA256 = "http://www.w3.org/2001/04/xmldsig-more#rsa-sha256"
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
RSA_SHA1 = "http://www.w3.org/2000/09/xmldsig#rsa-sha1"
SHA1 = "http://www.w3.org/2000/09/xmldsig#sha1"
ID_ATTRS = [
    "--id-attr:ID", "urn:oasis:names:tc:SAML:2.0:assertion:Assertion",
    "--id-attr:ID", "urn:oasis:names:tc:SAML:2.0:protocol:Response",
]


def prefix_of(xml, local):
    found = re.search(rf"<(\w+):{local}[\s>]", xml)
    if not found:
        raise SystemExit(f"no {local} element")
    return found.group(1)


def assertion_span(xml):
    p = prefix_of(xml, "Assertion")
    start = xml.index(f"<{p}:Assertion")
    end = xml.index(f"</{p}:Assertion>", start) + len(f"</{p}:Assertion>")
    return start, end


def strip_signatures(xml):
    return re.sub(r"<(\w+):Signature[\s>].*?</\1:Signature>", "", xml, flags=re.S)


def set_attr(xml, name, value, count=0):
    return re.sub(rf'(\s{name}=")[^"]*(")', rf"\g<1>{value}\g<2>", xml, count=count)


def instant(offset_seconds):
    at = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=offset_seconds)
    return at.strftime("%Y-%m-%dT%H:%M:%SZ")


def template(target_id, sig_alg, digest_alg):
    return (f'<ds:Signature xmlns:ds="{DSIG}"><ds:SignedInfo>'
            f'<ds:CanonicalizationMethod Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/>'
            f'<ds:SignatureMethod Algorithm="{sig_alg}"/><ds:Reference URI="#{target_id}">'
            f'<ds:Transforms><ds:Transform Algorithm="{DSIG}enveloped-signature"/>'
            f'<ds:Transform Algorithm="http://www.w3.org/2001/10/xml-exc-c14n#"/></ds:Transforms>'
            f'<ds:DigestMethod Algorithm="{digest_alg}"/><ds:DigestValue/></ds:Reference>'
            f'</ds:SignedInfo><ds:SignatureValue/><ds:KeyInfo><ds:X509Data/></ds:KeyInfo></ds:Signature>')


def sign(xml, key, cert, what="assertion", sig_alg=RSA_SHA256, digest_alg=SHA256):
    """Strips every signature, then signs the assertion (or the whole response) with xmlsec1."""
    xml = strip_signatures(xml)
    if what == "assertion":
        start, _ = assertion_span(xml)
    else:
        start = xml.index(f"<{prefix_of(xml, 'Response')}:Response")
    element_end = xml.index(">", start) + 1
    target_id = re.search(r'\sID="([^"]*)"', xml[start:element_end]).group(1)
    # The signature goes right after the element's Issuer (schema order).
    p = prefix_of(xml, "Issuer")
    issuer_end = xml.index(f"</{p}:Issuer>", start) + len(f"</{p}:Issuer>")
    xml = xml[:issuer_end] + template(target_id, sig_alg, digest_alg) + xml[issuer_end:]
    with tempfile.TemporaryDirectory() as tmp:
        source, signed = os.path.join(tmp, "in.xml"), os.path.join(tmp, "out.xml")
        with open(source, "w") as f:
            f.write(xml)
        subprocess.run(["xmlsec1", "--sign", "--privkey-pem", f"{key},{cert}", *ID_ATTRS,
                        "--output", signed, source], check=True, capture_output=True)
        with open(signed) as f:
            return f.read()


def verifies(xml, cert):
    with tempfile.NamedTemporaryFile("w", suffix=".xml") as f:
        f.write(xml)
        f.flush()
        run = subprocess.run(["xmlsec1", "--verify", "--pubkey-cert-pem", cert, *ID_ATTRS, f.name],
                             capture_output=True)
        return run.returncode == 0


def evil_copy(original, new_id, name_id="mallory@corp.test"):
    copy = strip_signatures(original)
    copy = re.sub(r'(\sID=")[^"]*(")', rf"\g<1>{new_id}\g<2>", copy, count=1)
    return re.sub(r"(<(\w+):NameID[^>]*>)[^<]*(</\2:NameID>)", rf"\g<1>{name_id}\g<3>", copy, count=1)


def forge(shape, xml, workdir):
    key, cert = os.path.join(workdir, "idp.key"), os.path.join(workdir, "idp.crt")
    resign = lambda text, **kw: sign(text, key, cert, **kw)
    start, end = assertion_span(xml)
    original = xml[start:end]
    rp = prefix_of(xml, "Response")

    if shape == "tamper":
        return re.sub(r"(<(\w+):AttributeValue[^>]*>)[^<]*", r"\g<1>root", xml, count=1)
    if shape == "strip-signature":
        return strip_signatures(xml)
    if shape == "foreign-key":
        return sign(xml, os.path.join(workdir, "foreign.key"), os.path.join(workdir, "foreign.crt"))
    if shape == "sha1":
        return resign(xml, sig_alg=RSA_SHA1, digest_alg=SHA1)
    if shape == "xsw-clone-before":
        return xml[:start] + evil_copy(original, "_evil") + xml[start:]
    if shape == "xsw-clone-after":
        return xml[:end] + evil_copy(original, "_evil") + xml[end:]
    if shape == "xsw-same-id":
        same_id = re.search(r'\sID="([^"]*)"', original).group(1)
        return xml[:start] + evil_copy(original, same_id) + xml[start:]
    if shape == "xsw-extensions":
        # The signed assertion hides in <Extensions> (after the Response's Issuer); an
        # unsigned one takes its place.
        body = xml[:start] + evil_copy(original, "_evil") + xml[end:]
        p = prefix_of(xml, "Issuer")
        issuer_end = body.index(f"</{p}:Issuer>") + len(f"</{p}:Issuer>")
        return (body[:issuer_end] + f"<{rp}:Extensions>{original}</{rp}:Extensions>"
                + body[issuer_end:])
    if shape == "xsw-object":
        # The unsigned assertion carries the original's Signature, whose ds:Object holds the
        # original (signed) assertion.
        signature = re.search(r"<(\w+):Signature[\s>].*?</\1:Signature>", original, flags=re.S)
        dp = signature.group(1)
        moved = signature.group(0).replace(
            f"</{dp}:Signature>", f"<{dp}:Object>{strip_signatures(original)}</{dp}:Object></{dp}:Signature>")
        evil = evil_copy(original, "_evil")
        p = prefix_of(evil, "Issuer")
        cut = evil.index(f"</{p}:Issuer>") + len(f"</{p}:Issuer>")
        return xml[:start] + evil[:cut] + moved + evil[cut:] + xml[end:]
    if shape == "expired":
        out = set_attr(xml, "NotOnOrAfter", instant(-3600))
        out = set_attr(out, "NotBefore", instant(-7200))
        out = set_attr(out, "IssueInstant", instant(-7200))
        out = set_attr(out, "AuthnInstant", instant(-7200))
        return resign(out)
    if shape == "not-yet-valid":
        out = set_attr(xml, "NotBefore", instant(3600))
        out = set_attr(out, "NotOnOrAfter", instant(7200))
        return resign(out)
    if shape == "audience":
        return resign(re.sub(r"(<(\w+):Audience>)[^<]*", r"\g<1>https://other-sp.test", xml))
    if shape == "recipient":
        return resign(set_attr(xml, "Recipient", "https://evil.test/acs"))
    if shape == "destination":
        return resign(set_attr(xml, "Destination", "https://evil.test/acs"), what="response")
    if shape == "in-response-to":
        return resign(set_attr(xml, "InResponseTo", "_bogus"))
    if shape == "issuer":
        return resign(re.sub(r"(<(\w+):Issuer[^>]*>)[^<]*", r"\g<1>http://evil.test/metadata", xml))
    if shape == "status":
        return resign(xml.replace("urn:oasis:names:tc:SAML:2.0:status:Success",
                                  "urn:oasis:names:tc:SAML:2.0:status:Requester"), what="response")
    if shape == "unsolicited":
        return resign(re.sub(r'\sInResponseTo="[^"]*"', "", xml))
    if shape == "comment-nameid":
        # Exclusive c14n drops comments: the signature still holds.
        return re.sub(r"(<(\w+):NameID[^>]*>)alice@corp\.test\.evil\.test",
                      r"\g<1>alice@corp.test<!---->.evil.test", xml, count=1)
    if shape in ("xxe", "billion-laughs"):
        if shape == "xxe":
            doctype = '<!DOCTYPE r [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        else:
            entities = '<!ENTITY l0 "lol">' + "".join(
                f'<!ENTITY l{i} "{("&l%d;" % (i - 1)) * 10}">' for i in range(1, 10))
            doctype = f"<!DOCTYPE r [{entities}]>"
        entity = "&x;" if shape == "xxe" else "&l9;"
        body = re.sub(r"^<\?xml[^>]*\?>\s*", "", xml)
        body = re.sub(r"(<(\w+):NameID[^>]*>)", rf"\g<1>{entity}", body, count=1)
        return f'<?xml version="1.0"?>\n{doctype}\n{body}'
    raise SystemExit(f"unknown shape {shape}")


SHAPES = ["tamper", "strip-signature", "foreign-key", "sha1", "xsw-clone-before",
          "xsw-clone-after", "xsw-same-id", "xsw-extensions", "xsw-object", "expired",
          "not-yet-valid", "audience", "recipient", "destination", "in-response-to", "issuer",
          "status", "unsolicited", "comment-nameid", "xxe", "billion-laughs"]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("shape", choices=SHAPES + ["selfcheck"])
    parser.add_argument("--in", dest="source", required=True)
    parser.add_argument("--out")
    parser.add_argument("--workdir", required=True)
    args = parser.parse_args()
    with open(args.source) as f:
        xml = f.read()
    if args.shape == "selfcheck":
        cert = os.path.join(args.workdir, "idp.crt")
        for shape in SHAPES:
            try:
                forged = forge(shape, xml, args.workdir)
                print(f"{shape:18} {'verifies' if verifies(forged, cert) else 'does not verify'}")
            except (SystemExit, subprocess.CalledProcessError, AttributeError, ValueError) as e:
                print(f"{shape:18} not applicable to this response ({e})")
        return
    if not args.out:
        sys.exit("--out is required")
    with open(args.out, "w") as f:
        f.write(forge(args.shape, xml, args.workdir))


if __name__ == "__main__":
    main()
