"""The SAM template's trust-boundary contract, checked on its parsed form.

cfn-lint says the template is valid CloudFormation and checkov that it
follows common practice; neither knows what earshot's edge must hold:

- the edge's concurrency is capped by default, and throttling alarms;
- signatures are required by default, and then signing keys are too;
- the CloudFront option: the Function URL then takes only CloudFront's
  signed requests (origin access control, AWS_IAM), no public permission
  remains, a WAF rule limits the rate per client address, and the edge
  trusts CloudFront's headers exactly then;
- only the Firehose role may write under events/ in the bucket.

Usage: python check_template.py TEMPLATE (prints what is wrong, exits 1).
Run by scripts/check-deploy with cfn-lint's Python, whose decoder reads the
template's short-form intrinsics (!Ref, !If, ...).
"""

import sys

from cfnlint.decode import decode

problems = []


def expect(what, got, want):
    if got != want:
        problems.append(f"{what}: got {got!r}, want {want!r}")


def main(path):
    template, errors = decode(path)
    if errors:
        sys.exit(f"{path}: cannot parse: {errors}")
    params = template["Parameters"]
    res = template["Resources"]
    fn = res["EdgeFunction"]["Properties"]
    env = fn["Environment"]["Variables"]

    # Concurrency: capped by default, and throttles alarm.
    reserved = params["ReservedConcurrency"]
    if int(reserved.get("Default", "0")) <= 0 or int(reserved.get("MinValue", 0)) < 1:
        problems.append("ReservedConcurrency must default to, and allow only, a positive cap")
    expect("EdgeFunction ReservedConcurrentExecutions", fn.get("ReservedConcurrentExecutions"), {"Ref": "ReservedConcurrency"})
    alarm = res.get("EdgeThrottlesAlarm", {}).get("Properties", {})
    expect("EdgeThrottlesAlarm metric", (alarm.get("Namespace"), alarm.get("MetricName")), ("AWS/Lambda", "Throttles"))

    # Signatures required unless a parameter says otherwise.
    expect("RequireSignature default", params["RequireSignature"].get("Default"), "true")
    expect("EARSHOT_REQUIRE_SIGNATURE", env.get("EARSHOT_REQUIRE_SIGNATURE"), {"Ref": "RequireSignature"})
    rule = template.get("Rules", {}).get("SigningKeysWhenRequired", {})
    expect("Rules.SigningKeysWhenRequired condition", rule.get("RuleCondition"), {"Fn::Equals": [{"Ref": "RequireSignature"}, "true"]})

    # CloudFront in front: only it reaches the function, and only then are
    # its headers trusted.
    expect("EARSHOT_TRUST_CLOUDFRONT", env.get("EARSHOT_TRUST_CLOUDFRONT"), {"Fn::If": ["UseCloudFront", "true", "false"]})
    for retired in ("EARSHOT_TRUST_FORWARDED", "EARSHOT_TRUST_DEVICE_HEADERS"):
        if retired in env:
            problems.append(f"{retired} is set but the edge refuses it")
    url = res["EdgeFunctionUrl"]["Properties"]
    expect("EdgeFunctionUrl AuthType", url.get("AuthType"), {"Fn::If": ["UseCloudFront", "AWS_IAM", "NONE"]})
    for name, r in res.items():
        props = r.get("Properties", {})
        if r.get("Type") == "AWS::Lambda::Permission" and props.get("Principal") == "*":
            expect(f"{name} condition (a public permission)", r.get("Condition"), "UsePublicFunctionUrl")
        if r.get("Type") == "AWS::Lambda::Permission" and props.get("Principal") == "cloudfront.amazonaws.com":
            expect(f"{name} condition", r.get("Condition"), "UseCloudFront")
            if "SourceArn" not in props:
                problems.append(f"{name}: a CloudFront permission must name the distribution (SourceArn)")
    expect("UsePublicFunctionUrl", template["Conditions"].get("UsePublicFunctionUrl"), {
        "Fn::And": [{"Fn::Equals": [{"Ref": "FrontDoor"}, "FunctionUrl"]}, {"Fn::Not": [{"Condition": "UseCloudFront"}]}]
    })
    dist = res["Distribution"]["Properties"]["DistributionConfig"]
    origins = dist["Origins"]
    expect("Distribution origins", len(origins), 1)
    expect("Distribution origin access control", origins[0].get("OriginAccessControlId"), {"Fn::GetAtt": ["OriginAccessControl", "Id"]})
    oac = res["OriginAccessControl"]["Properties"]["OriginAccessControlConfig"]
    expect("OriginAccessControl", (oac.get("OriginAccessControlOriginType"), oac.get("SigningBehavior")), ("lambda", "always"))
    expect("Distribution WebACLId", dist.get("WebACLId"), {"Fn::If": ["CreateWebAcl", {"Fn::GetAtt": ["WebAcl", "Arn"]}, {"Ref": "CloudFrontWebAclArn"}]})
    headers = res["OriginRequestPolicy"]["Properties"]["OriginRequestPolicyConfig"]["HeadersConfig"]["Headers"]
    for h in ("User-Agent", "CloudFront-Viewer-Address", "CloudFront-Viewer-Country", "X-Device-IP", "X-Device-User-Agent", "X-Earshot-SSAI"):
        if h not in headers:
            problems.append(f"the origin request policy does not forward {h}")
    if "Host" in headers:
        problems.append("the origin request policy forwards Host, which breaks the origin's SigV4 signature")
    rules = res["WebAcl"]["Properties"]["Rules"]
    rate = [r["Statement"]["RateBasedStatement"] for r in rules if "RateBasedStatement" in r["Statement"]]
    expect("WebAcl rate rules", [(r.get("AggregateKeyType"), r.get("Limit")) for r in rate], [("IP", {"Ref": "WafRateLimit"})])

    # Only Firehose writes the events the loader counts.
    statements = res["EventsBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    deny = [s for s in statements if s.get("Effect") == "Deny" and s.get("Action") == "s3:PutObject"]
    expect("bucket policy: PutObject denials", len(deny), 1)
    if deny:
        d = deny[0]
        expect("bucket policy denial principal", d.get("Principal"), "*")
        expect("bucket policy denial resource", d.get("Resource"), {"Fn::Sub": "${EventsBucket.Arn}/events/*"})
        expect("bucket policy denial condition", d.get("Condition"), {"ArnNotEquals": {"aws:PrincipalArn": {"Fn::GetAtt": ["FirehoseRole", "Arn"]}}})



if __name__ == "__main__":
    try:
        main(sys.argv[1])
    except (KeyError, IndexError, TypeError) as e:
        problems.append(f"the template lacks a part the contract needs: {e!r}")
    if problems:
        print("\n".join(problems))
        sys.exit(1)
