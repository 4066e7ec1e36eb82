#!/usr/bin/env python3
"""The ec2-compromised-instance runbook as a folder-of-boto3-scripts engineer would write it.

The same AWS operations, in the same order, as `runbook run ec2-compromised-instance` makes
(quarantine group, egress revoke, interface swap, snapshots, tags, stop + wait, image, terminate +
wait, replacement + wait, status checks), with none of the extras (no transcript, no plan, no
redaction). Not identical: 19 calls to the runbook's 20 (the runbook describes the instance twice
before quarantining it, `ec2::describe` then `ec2::isolate`), and fewer tags on the group, the
snapshots, the image and the replacement (docs/benchmarks.md, section 5, lists them).
Used by benches/cloud.rs to compare wall time end to end, interpreter start-up included.

usage: boto3_compromised.py ENDPOINT INSTANCE_ID INCIDENT
"""
import sys
import time

import boto3

endpoint, instance_id, incident = sys.argv[1:4]
ec2 = boto3.client("ec2", endpoint_url=endpoint, region_name="us-east-1")


def describe(iid):
    return ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]


def wait_state(iid, state):
    while describe(iid)["State"]["Name"] != state:
        time.sleep(5)


# Account check, as runbook.toml's account_id does.
ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": ["default"]}])

# Containment: quarantine.
inst = describe(instance_id)
vpc = inst["VpcId"]
original_groups = [g["GroupId"] for g in inst["SecurityGroups"]]
found = ec2.describe_security_groups(
    Filters=[{"Name": "vpc-id", "Values": [vpc]}, {"Name": "group-name", "Values": ["runbook-quarantine"]}]
)["SecurityGroups"]
if found:
    sg = found[0]["GroupId"]
else:
    sg = ec2.create_security_group(
        GroupName="runbook-quarantine", Description="Quarantine: no ingress, no egress", VpcId=vpc,
        TagSpecifications=[{"ResourceType": "security-group", "Tags": [{"Key": "Incident", "Value": incident}]}],
    )["GroupId"]
    ec2.revoke_security_group_egress(GroupId=sg, IpPermissions=[{"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
for eni in inst["NetworkInterfaces"]:
    ec2.modify_network_interface_attribute(NetworkInterfaceId=eni["NetworkInterfaceId"], Groups=[sg])

# Containment: snapshots and tags.
inst = describe(instance_id)
snaps = []
for bdm in inst.get("BlockDeviceMappings", []):
    snaps.append(ec2.create_snapshot(
        VolumeId=bdm["Ebs"]["VolumeId"], Description=f"forensics {instance_id}",
        TagSpecifications=[{"ResourceType": "snapshot", "Tags": [{"Key": "Incident", "Value": incident}]}],
    )["SnapshotId"])
while any(s["State"] != "completed" for s in ec2.describe_snapshots(SnapshotIds=snaps)["Snapshots"]):
    time.sleep(5)
ec2.create_tags(Resources=[instance_id], Tags=[{"Key": "Incident", "Value": incident}, {"Key": "Compromised", "Value": "true"}])

# Eradication.
ec2.stop_instances(InstanceIds=[instance_id])
wait_state(instance_id, "stopped")
image = ec2.create_image(InstanceId=instance_id, Name=f"forensics-{incident}-{instance_id}", NoReboot=True)["ImageId"]
ec2.terminate_instances(InstanceIds=[instance_id])
wait_state(instance_id, "terminated")

# Recovery.
new = ec2.run_instances(
    ImageId=inst["ImageId"], InstanceType=inst["InstanceType"], SubnetId=inst["SubnetId"],
    SecurityGroupIds=original_groups,
    MinCount=1, MaxCount=1,
    TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "ReplacementFor", "Value": instance_id}]}],
)["Instances"][0]["InstanceId"]
wait_state(new, "running")
while True:
    st = ec2.describe_instance_status(InstanceIds=[new], IncludeAllInstances=True)["InstanceStatuses"]
    if st and st[0]["SystemStatus"]["Status"] == "ok" and st[0]["InstanceStatus"]["Status"] == "ok":
        break
    time.sleep(5)
print(f"replaced {instance_id} with {new} (image {image})")
