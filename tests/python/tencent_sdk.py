"""Calls smsgate's Tencent-compatible API with Tencent Cloud's official Python SDK (tencentcloud-sdk-python-sms),
over plain http as `HttpProfile(protocol="http", endpoint=...)`. Prints one JSON line per call: the SDK's
parsed answer, or the code, message and RequestId of the TencentCloudSDKException it raised.

usage: tencent_sdk.py ENDPOINT CALLS_JSON
CALLS_JSON: a list of {"secret_id", "secret_key", "action", "params", "tamper"?, "version"?}. `action` SendSms
goes through SmsClient.SendSms with a SendSmsRequest model; any other through call_json; with `version`,
through a CommonClient of that API version. With `tamper`, the body is changed after the SDK signed it.
"""
import json
import sys

from tencentcloud.common import credential
from tencentcloud.common.common_client import CommonClient
from tencentcloud.common.exception.tencent_cloud_sdk_exception import TencentCloudSDKException
from tencentcloud.common.http.request import ApiRequest
from tencentcloud.common.profile.client_profile import ClientProfile
from tencentcloud.common.profile.http_profile import HttpProfile
from tencentcloud.sms.v20210111 import models, sms_client

_send = ApiRequest.send_request
TAMPER = {"on": False}


def tampering_send(self, req):
    if TAMPER["on"] and req.data:
        req.data = req.data.replace("123456", "999999")
    return _send(self, req)


ApiRequest.send_request = tampering_send


def call(endpoint, spec):
    http = HttpProfile(protocol="http", endpoint=endpoint, reqTimeout=20)
    client = sms_client.SmsClient(
        credential.Credential(spec["secret_id"], spec["secret_key"]), "ap-guangzhou", ClientProfile(httpProfile=http)
    )
    TAMPER["on"] = bool(spec.get("tamper"))
    try:
        if "version" in spec:
            common = CommonClient(
                "sms", spec["version"], credential.Credential(spec["secret_id"], spec["secret_key"]), "ap-guangzhou",
                ClientProfile(httpProfile=http),
            )
            return {"ok": True, "response": common.call_json(spec["action"], spec["params"])}
        if spec["action"] == "SendSms":
            request = models.SendSmsRequest()
            request.from_json_string(json.dumps(spec["params"]))
            response = client.SendSms(request)
            return {"ok": True, "response": json.loads(response.to_json_string())}
        return {"ok": True, "response": client.call_json(spec["action"], spec["params"])}
    except TencentCloudSDKException as e:
        return {"ok": False, "code": e.get_code(), "message": e.get_message(), "request_id": e.get_request_id()}


def main():
    endpoint, calls = sys.argv[1], json.loads(sys.argv[2])
    for spec in calls:
        print(json.dumps(call(endpoint, spec)), flush=True)


if __name__ == "__main__":
    main()
