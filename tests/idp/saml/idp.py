#!/usr/bin/env python3
"""A real SAML 2.0 Identity Provider for Portcullis's integration tests, built on pysaml2.

Listens on 127.0.0.1 only. Prints `READY http://127.0.0.1:PORT` once it serves.
See README.md for the endpoints and users.
"""

import argparse
import base64
import html
import json
import os
import re
import secrets
import subprocess
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import saml2.entity
import saml2.sigver
from saml2 import BINDING_HTTP_POST, BINDING_HTTP_REDIRECT
from saml2.authn_context import MOBILETWOFACTORCONTRACT, PASSWORDPROTECTEDTRANSPORT
from saml2.config import IdPConfig
from saml2.saml import NAME_FORMAT_URI, NAMEID_FORMAT_EMAILADDRESS, NameID
from saml2.server import Server
from saml2.sigver import verify_redirect_signature
from saml2.xmldsig import DIGEST_SHA1, DIGEST_SHA256, SIG_RSA_SHA1, SIG_RSA_SHA256

PASSWORD = "password"

# NameID = the e-mail; attributes as an enterprise IdP sends them (multi-valued groups).
USERS = {
    "alice@corp.test": {
        "mail": ["alice@corp.test"],
        "displayName": ["Alice Example"],
        "givenName": ["Alice"],
        "groups": ["engineering", "admins"],
    },
    "bob@acme.test": {
        "mail": ["bob@acme.test"],
        "displayName": ["Bob Acme"],
        "groups": ["acme-users"],
        "organization": ["acme"],
    },
    "carol@corp.test": {
        "mail": ["carol@corp.test"],
        "displayName": ["Carol Example"],
        "groups": ["engineering"],
    },
    "alice@corp.test.evil.test": {
        "mail": ["alice@corp.test.evil.test"],
        "groups": ["outsiders"],
    },
    "nomail@corp.test": {},
}
# Who signs in with a second factor.
MFA_USERS = {"carol@corp.test"}


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def make_key_pair(workdir, name):
    key, cert = os.path.join(workdir, f"{name}.key"), os.path.join(workdir, f"{name}.crt")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
         "-subj", f"/CN={name}", "-keyout", key, "-out", cert],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    return key, cert


def pem_body(path):
    with open(path) as f:
        return "".join(l.strip() for l in f if "-----" not in l)


def sp_metadata(args):
    """The SP as pysaml2 needs to know it (what an admin would upload from Portcullis)."""
    keys = ""
    if args.sp_cert:
        body = pem_body(args.sp_cert)
        info = f"<ds:KeyInfo><ds:X509Data><ds:X509Certificate>{body}</ds:X509Certificate></ds:X509Data></ds:KeyInfo>"
        keys = (f'<md:KeyDescriptor use="signing">{info}</md:KeyDescriptor>'
                f'<md:KeyDescriptor use="encryption">{info}</md:KeyDescriptor>')
    signed = "true" if args.sp_cert else "false"
    return f"""<?xml version="1.0"?>
<md:EntityDescriptor xmlns:md="urn:oasis:names:tc:SAML:2.0:metadata" xmlns:ds="http://www.w3.org/2000/09/xmldsig#" entityID="{html.escape(args.sp_entity_id)}">
  <md:SPSSODescriptor AuthnRequestsSigned="{signed}" WantAssertionsSigned="true" protocolSupportEnumeration="urn:oasis:names:tc:SAML:2.0:protocol">
    {keys}
    <md:SingleLogoutService Binding="{BINDING_HTTP_REDIRECT}" Location="{html.escape(args.sp_slo)}"/>
    <md:NameIDFormat>{NAMEID_FORMAT_EMAILADDRESS}</md:NameIDFormat>
    <md:AssertionConsumerService Binding="{BINDING_HTTP_POST}" Location="{html.escape(args.sp_acs)}" index="0" isDefault="true"/>
  </md:SPSSODescriptor>
</md:EntityDescriptor>
"""


# Content encryption: XML Encryption algorithm, and xmlsec1's name for its session key.
ENCRYPTION = {
    "aes256-cbc": ("http://www.w3.org/2001/04/xmlenc#aes256-cbc", "aes-256"),
    "aes128-cbc": ("http://www.w3.org/2001/04/xmlenc#aes128-cbc", "aes-128"),
    "3des": ("http://www.w3.org/2001/04/xmlenc#tripledes-cbc", "des-192"),
}


def use_content_encryption(algorithm):
    """pysaml2's IdP always encrypts with 3DES; production IdPs use AES. Choose."""
    method, session_key = ENCRYPTION[algorithm]
    template = saml2.sigver.pre_encryption_part
    encrypt = saml2.sigver.SecurityContext.encrypt_assertion

    def pre_encryption_part(**kwargs):
        return template(msg_enc=method, **kwargs)

    def encrypt_assertion(self, statement, enc_key, template, key_type=None, node_xpath=None):
        return encrypt(self, statement, enc_key, template, key_type=session_key, node_xpath=node_xpath)

    saml2.entity.pre_encryption_part = pre_encryption_part
    saml2.sigver.SecurityContext.encrypt_assertion = encrypt_assertion


class Idp:
    def __init__(self, args):
        self.args = args
        self.base = f"http://127.0.0.1:{args.port}"
        os.makedirs(args.workdir, exist_ok=True)
        self.key, self.cert = make_key_pair(args.workdir, "idp")
        make_key_pair(args.workdir, "foreign")  # for forge.py's foreign-key shape
        sp_md = os.path.join(args.workdir, "sp-metadata.xml")
        with open(sp_md, "w") as f:
            f.write(sp_metadata(args))
        config = IdPConfig()
        config.load({
            "entityid": f"{self.base}/metadata",
            "service": {"idp": {
                "endpoints": {
                    "single_sign_on_service": [(f"{self.base}/sso/redirect", BINDING_HTTP_REDIRECT)],
                    "single_logout_service": [(f"{self.base}/slo/redirect", BINDING_HTTP_REDIRECT)],
                },
                "policy": {"default": {
                    "lifetime": {"minutes": 5},
                    "attribute_restrictions": None,
                    "name_form": NAME_FORMAT_URI,
                }},
                "name_id_format": [NAMEID_FORMAT_EMAILADDRESS],
                "want_authn_requests_signed": bool(args.sp_cert),
            }},
            "key_file": self.key,
            "cert_file": self.cert,
            "encryption_keypairs": [{"key_file": self.key, "cert_file": self.cert}],
            "metadata": {"local": [sp_md]},
            "xmlsec_binary": "/usr/bin/xmlsec1",
        })
        self.server = Server(config=config)
        self.sign_alg = SIG_RSA_SHA1 if args.sign_alg == "rsa-sha1" else SIG_RSA_SHA256
        self.digest_alg = DIGEST_SHA1 if args.digest == "sha1" else DIGEST_SHA256
        self.lock = threading.Lock()
        self.pending = {}   # ticket -> the AuthnRequest's facts
        self.sessions = {}  # user -> last SessionIndex
        self.stats = {"logins": 0, "logout_requests": 0, "logout_responses": 0}
        from saml2.metadata import create_metadata_string
        self.metadata = create_metadata_string(None, config=config, valid=2, sign=False).decode()
        with open(os.path.join(args.workdir, "idp-metadata.xml"), "w") as f:
            f.write(self.metadata)

    # -- messages ---------------------------------------------------------------------------

    def verify_query(self, query):
        """The SP's redirect-binding signature, required when its certificate is known."""
        if not self.args.sp_cert:
            return True
        if "Signature" not in query or "SigAlg" not in query:
            return False
        return verify_redirect_signature(query, self.server.sec.sec_backend,
                                         cert=pem_body(self.args.sp_cert))

    def response_form(self, user, acs, in_response_to, relay_state):
        class_ref = MOBILETWOFACTORCONTRACT if user in MFA_USERS else PASSWORDPROTECTEDTRANSPORT
        encrypt = bool(self.args.encrypt_assertion and self.args.sp_cert)
        response = self.server.create_authn_response(
            identity=USERS[user],
            in_response_to=in_response_to,
            destination=acs,
            sp_entity_id=self.args.sp_entity_id,
            name_id=NameID(format=NAMEID_FORMAT_EMAILADDRESS, text=user),
            authn={"class_ref": class_ref, "authn_auth": self.base},
            sign_assertion=True,
            sign_response=self.args.sign_response,
            sign_alg=self.sign_alg,
            digest_alg=self.digest_alg,
            encrypt_assertion=encrypt,
            encrypt_cert_assertion=pem_body(self.args.sp_cert) if encrypt else None,
        )
        xml = str(response)
        # The SessionIndex pysaml2 chose: what an IdP-initiated logout names.
        found = re.search(r'SessionIndex="([^"]+)"', xml)
        with self.lock:
            self.sessions[user] = found.group(1) if found else None
            self.stats["logins"] += 1
        encoded = base64.b64encode(xml.encode()).decode()
        relay = (f'<input type="hidden" name="RelayState" value="{html.escape(relay_state)}"/>'
                 if relay_state else "")
        return (f'<html><body onload="document.forms[0].submit()">'
                f'<form method="post" action="{html.escape(acs)}">'
                f'<input type="hidden" name="SAMLResponse" value="{encoded}"/>{relay}'
                f'<noscript><button>Continue</button></noscript></form></body></html>')

    def logout_request(self, user, signed, binding):
        """An IdP-initiated LogoutRequest for `user`'s last session: a redirect URL, or (POST)
        the form to submit, signed inside the XML."""
        with self.lock:
            session_index = self.sessions.get(user)
        post = binding == "post"
        _, request = self.server.create_logout_request(
            destination=self.args.sp_slo,
            issuer_entity_id=self.args.sp_entity_id,
            name_id=NameID(format=NAMEID_FORMAT_EMAILADDRESS, text=user),
            session_indexes=[session_index] if session_index else None,
            sign=signed and post,
            sign_alg=self.sign_alg,
            digest_alg=self.digest_alg,
        )
        if post:
            return {"url": self.args.sp_slo,
                    "form": {"SAMLRequest": base64.b64encode(str(request).encode()).decode()}}
        info = self.server.apply_binding(BINDING_HTTP_REDIRECT, str(request), self.args.sp_slo,
                                         relay_state="", sign=signed, sigalg=self.sign_alg)
        return {"url": dict(info["headers"])["Location"]}


class Handler(BaseHTTPRequestHandler):
    idp = None  # set in main

    def log_message(self, fmt, *args):
        log(fmt % args)

    def send(self, status, body, content_type="text/html; charset=utf-8", headers=()):
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def query(self):
        return {k: v[0] for k, v in urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query).items()}

    def form(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length).decode()
        if self.headers.get("Content-Type", "").startswith("application/json"):
            return json.loads(raw or "{}")
        return {k: v[0] for k, v in urllib.parse.parse_qs(raw).items()}

    def do_GET(self):
        idp, path = self.idp, urllib.parse.urlsplit(self.path).path
        try:
            if path == "/metadata":
                return self.send(200, idp.metadata, "application/samlmetadata+xml")
            if path == "/sso/redirect":
                return self.sso(self.query())
            if path == "/sso/unsolicited":
                q = self.query()
                return self.send(200, idp.response_form(q["user"], idp.args.sp_acs, None, q.get("relay")))
            if path == "/slo/redirect":
                return self.slo(self.query())
            if path == "/__test/stats":
                with idp.lock:
                    return self.send(200, json.dumps(idp.stats), "application/json")
            return self.send(404, "not found")
        except Exception as e:  # a test IdP: say what went wrong
            log("error:", repr(e))
            return self.send(400, f"error: {html.escape(repr(e))}")

    def do_POST(self):
        idp, path = self.idp, urllib.parse.urlsplit(self.path).path
        try:
            if path == "/login":
                return self.login(self.form())
            if path == "/__test/logout":
                q = self.query()
                message = idp.logout_request(self.form()["user"], signed=q.get("unsigned") != "1",
                                             binding=q.get("binding", "redirect"))
                return self.send(200, json.dumps(message), "application/json")
            return self.send(404, "not found")
        except Exception as e:
            log("error:", repr(e))
            return self.send(400, f"error: {html.escape(repr(e))}")

    def sso(self, q):
        idp = self.idp
        if not idp.verify_query(q):
            return self.send(400, "AuthnRequest signature missing or invalid")
        # pysaml2 checks the query signature itself too (want_authn_requests_signed).
        request = idp.server.parse_authn_request(
            q["SAMLRequest"], BINDING_HTTP_REDIRECT, relay_state=q.get("RelayState"),
            sigalg=q.get("SigAlg"), signature=q.get("Signature")).message
        acs = request.assertion_consumer_service_url or idp.args.sp_acs
        if acs != idp.args.sp_acs:
            return self.send(400, f"unregistered ACS {acs}")
        ticket = secrets.token_urlsafe(16)
        with idp.lock:
            idp.pending[ticket] = {"id": request.id, "acs": acs, "relay": q.get("RelayState")}
        return self.send(200, f"""<html><body><h1>Test IdP sign-in</h1>
<form method="post" action="/login">
<input name="username"/><input name="password" type="password"/>
<input type="hidden" name="ticket" value="{ticket}"/><button>Sign in</button></form></body></html>""")

    def login(self, form):
        idp = self.idp
        with idp.lock:
            pending = idp.pending.get(form.get("ticket", ""))
        user = form.get("username", "")
        if pending is None:
            return self.send(400, "unknown ticket")
        if user not in USERS or form.get("password") != PASSWORD:
            return self.send(200, "<html><body>Invalid credentials</body></html>")
        with idp.lock:
            idp.pending.pop(form["ticket"], None)
        return self.send(200, idp.response_form(user, pending["acs"], pending["id"], pending["relay"]))

    def slo(self, q):
        idp = self.idp
        if "SAMLResponse" in q:
            with idp.lock:
                idp.stats["logout_responses"] += 1
            return self.send(200, "ok")
        if not idp.verify_query(q):
            return self.send(400, "LogoutRequest signature missing or invalid")
        request = idp.server.parse_logout_request(
            q["SAMLRequest"], BINDING_HTTP_REDIRECT, relay_state=q.get("RelayState"),
            sigalg=q.get("SigAlg"), signature=q.get("Signature")).message
        with idp.lock:
            idp.stats["logout_requests"] += 1
            idp.sessions.pop(request.name_id.text, None)
        response = idp.server.create_logout_response(request, [BINDING_HTTP_REDIRECT], sign=False)
        info = idp.server.apply_binding(BINDING_HTTP_REDIRECT, str(response), idp.args.sp_slo,
                                        relay_state=q.get("RelayState", ""), response=True,
                                        sign=True, sigalg=idp.sign_alg)
        return self.send(302, "", headers=[("Location", dict(info["headers"])["Location"])])


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--sp-entity-id", required=True)
    parser.add_argument("--sp-acs", required=True)
    parser.add_argument("--sp-slo", required=True)
    parser.add_argument("--workdir", required=True)
    parser.add_argument("--sp-cert", help="the SP's certificate: requests must be signed with its key")
    parser.add_argument("--sign-response", action="store_true")
    parser.add_argument("--digest", choices=["sha256", "sha1"], default="sha256")
    parser.add_argument("--sign-alg", choices=["rsa-sha256", "rsa-sha1"], default="rsa-sha256")
    parser.add_argument("--encrypt-assertion", action="store_true",
                        help="encrypt assertions for --sp-cert (RSA-OAEP key transport)")
    parser.add_argument("--encryption", choices=sorted(ENCRYPTION), default="aes256-cbc")
    args = parser.parse_args()
    use_content_encryption(args.encryption)
    Handler.idp = Idp(args)
    httpd = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"READY http://127.0.0.1:{args.port}", flush=True)
    httpd.serve_forever()


if __name__ == "__main__":
    main()
