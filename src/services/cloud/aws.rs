//! The AWS backend: aws-sdk-ec2 and aws-sdk-ssm (and, in `aws/`, ELBv2, CloudWatch and Auto
//! Scaling) with the standard credential chain.
//!
//! Region, profile, endpoint (`AWS_ENDPOINT_URL` or the environment's `endpoint`, so LocalStack
//! and moto work unchanged) and the SDK's standard retry mode come from the environment config.
//! Precedence: the region and profile as `config::AwsSettings::resolve` settled them (`--region`
//! / `--profile`, then `AWS_REGION` / `AWS_PROFILE`, then runbook.toml, then the shared config),
//! the endpoint from runbook.toml over `AWS_ENDPOINT_URL`; what was resolved is kept (`target`) so the
//! run banner and `run_started` say where the run acts, and a connection error names the URL.
//! Every response's request id is kept for the transcript, and every error keeps its AWS code
//! (`InvalidInstanceID.NotFound`, ...) so scripts can catch it by code.

use std::collections::HashMap;
use std::sync::Mutex;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_sdk_ec2::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ec2::operation::RequestId;
use aws_sdk_ec2::types as ec2t;

use super::{
    CloudResult, CommandRequest, Eni, Filter, Instance, InstanceStatus, Invocation, LaunchSpec,
    PatchState, Snapshot, StateAction, StateChange, Tags,
};
use super::{SnapshotFilter, Volume};
use crate::base::error::BindingError;
use crate::data::config::AwsSettings;

mod autoscaling;
mod cloudwatch;
mod elb;

pub struct AwsCloud {
    ec2: aws_sdk_ec2::Client,
    ssm: aws_sdk_ssm::Client,
    sts: aws_sdk_sts::Client,
    elb: aws_sdk_elasticloadbalancingv2::Client,
    cloudwatch: aws_sdk_cloudwatch::Client,
    autoscaling: aws_sdk_autoscaling::Client,
    /// The region the SDK's configuration chain resolved (runbook.toml, `AWS_REGION`, profile).
    region: Option<String>,
    /// The endpoint override in force (the environment's `endpoint`, else `AWS_ENDPOINT_URL`).
    endpoint: Option<String>,
    request_ids: Mutex<Vec<String>>,
    /// The caller ARN STS answered with, once asked: who the run acts as (`identity`).
    caller: Mutex<Option<String>>,
}

/// Operations sent to SSM (the rest go to EC2), for naming the URL a failed connection tried.
const SSM_OPERATIONS: &[&str] = &[
    "SendCommand",
    "GetCommandInvocation",
    "ListCommandInvocations",
    "GetParameter",
    "PutParameter",
    "DescribeInstanceInformation",
];

const ELB_OPERATIONS: &[&str] = &[
    "DescribeListeners",
    "ModifyListener",
    "DescribeTargetGroups",
    "DescribeTargetHealth",
    "RegisterTargets",
    "DeregisterTargets",
];
const CLOUDWATCH_OPERATIONS: &[&str] = &[
    "GetMetricData",
    "DescribeAlarms",
    "EnableAlarmActions",
    "DisableAlarmActions",
];
const AUTOSCALING_OPERATIONS: &[&str] = &[
    "DescribeAutoScalingGroups",
    "SetDesiredCapacity",
    "SuspendProcesses",
    "ResumeProcesses",
    "StartInstanceRefresh",
    "DescribeInstanceRefreshes",
];

/// Turns any SDK error into a catchable binding error with the AWS code and request id.
fn sdk_error_of<E, R>(operation: &str, e: SdkError<E, R>) -> BindingError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let code = e.code().map(str::to_string).unwrap_or_else(|| {
        match &e {
            SdkError::TimeoutError(_) => "Timeout",
            SdkError::DispatchFailure(_) => "DispatchFailure",
            SdkError::ConstructionFailure(_) => "ConstructionFailure",
            SdkError::ResponseError(_) => "ResponseError",
            _ => "Unknown",
        }
        .to_string()
    });
    let message = e.message().map(str::to_string).unwrap_or_else(|| chain(&e));
    let request_id = RequestId::request_id(e.meta()).map(str::to_string);
    BindingError {
        code,
        message: format!("{operation}: {message}"),
        request_id,
    }
}

/// A transport or credential error as one readable line: each distinct cause in the chain, the
/// SDK's full debug dump left to `RUST_LOG=debug`.
fn chain(e: &dyn std::error::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current: Option<&dyn std::error::Error> = Some(e);
    while let Some(err) = current {
        let text = err.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = err.source();
    }
    tracing::debug!(error = ?e, "AWS SDK error");
    let mut line = parts.join(": ");
    if crate::base::error::truncate_utf8(&mut line, 400) {
        line.push('…');
    }
    line
}

fn tag_list(tags: &Tags) -> Vec<ec2t::Tag> {
    tags.iter()
        .map(|(k, v)| ec2t::Tag::builder().key(k).value(v).build())
        .collect()
}

fn tag_spec(kind: ec2t::ResourceType, tags: &Tags) -> Option<ec2t::TagSpecification> {
    (!tags.is_empty()).then(|| {
        ec2t::TagSpecification::builder()
            .resource_type(kind)
            .set_tags(Some(tag_list(tags)))
            .build()
    })
}

fn tags_of(tags: &[ec2t::Tag]) -> Tags {
    tags.iter()
        .filter_map(|t| {
            Some((
                t.key()?.to_string(),
                t.value().unwrap_or_default().to_string(),
            ))
        })
        .collect()
}

fn time_of(t: Option<&aws_sdk_ec2::primitives::DateTime>) -> String {
    t.and_then(|t| {
        t.fmt(aws_sdk_ec2::primitives::DateTimeFormat::DateTime)
            .ok()
    })
    .unwrap_or_default()
}

fn snapshot_of(s: &ec2t::Snapshot) -> Snapshot {
    Snapshot {
        id: s.snapshot_id().unwrap_or_default().into(),
        volume: s.volume_id().unwrap_or_default().into(),
        state: s
            .state()
            .map(|x| x.as_str().to_string())
            .unwrap_or_default(),
        tags: tags_of(s.tags()),
        start_time: time_of(s.start_time()),
    }
}

fn instance_of(i: &ec2t::Instance) -> Instance {
    Instance {
        id: i.instance_id().unwrap_or_default().into(),
        state: i
            .state()
            .and_then(|s| s.name())
            .map(|n| n.as_str().to_string())
            .unwrap_or_default(),
        instance_type: i
            .instance_type()
            .map(|t| t.as_str().to_string())
            .unwrap_or_default(),
        image: i.image_id().unwrap_or_default().into(),
        vpc: i.vpc_id().unwrap_or_default().into(),
        subnet: i.subnet_id().unwrap_or_default().into(),
        private_ip: i.private_ip_address().unwrap_or_default().into(),
        security_groups: i
            .security_groups()
            .iter()
            .filter_map(|g| g.group_id().map(str::to_string))
            .collect(),
        network_interfaces: i
            .network_interfaces()
            .iter()
            .map(|n| Eni {
                id: n.network_interface_id().unwrap_or_default().into(),
                groups: n
                    .groups()
                    .iter()
                    .filter_map(|g| g.group_id().map(str::to_string))
                    .collect(),
            })
            .collect(),
        volumes: i
            .block_device_mappings()
            .iter()
            .filter_map(|b| b.ebs().and_then(|e| e.volume_id()).map(str::to_string))
            .collect(),
        tags: tags_of(i.tags()),
        launch_time: i
            .launch_time()
            .and_then(|t| {
                t.fmt(aws_sdk_ec2::primitives::DateTimeFormat::DateTime)
                    .ok()
            })
            .unwrap_or_default(),
    }
}

impl AwsCloud {
    /// [`sdk_error_of`], and when the request never got an answer (connection refused, DNS,
    /// timeout), the URL it tried: a wrong `endpoint` or `AWS_ENDPOINT_URL` shows at once.
    fn sdk_error<E, R>(&self, operation: &str, e: SdkError<E, R>) -> BindingError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
        R: std::fmt::Debug,
    {
        let unanswered = matches!(e, SdkError::DispatchFailure(_) | SdkError::TimeoutError(_));
        let mut err = sdk_error_of(operation, e);
        if unanswered {
            let service = match operation {
                "GetCallerIdentity" => "sts",
                op if SSM_OPERATIONS.contains(&op) => "ssm",
                op if ELB_OPERATIONS.contains(&op) => "elasticloadbalancing",
                op if CLOUDWATCH_OPERATIONS.contains(&op) => "monitoring",
                op if AUTOSCALING_OPERATIONS.contains(&op) => "autoscaling",
                _ => "ec2",
            };
            err.message = format!("{} (URL tried: {})", err.message, self.url_for(service));
        }
        err
    }

    /// The URL requests to `service` go to: the endpoint override, or AWS's regional default.
    fn url_for(&self, service: &str) -> String {
        match (&self.endpoint, &self.region) {
            (Some(endpoint), _) => endpoint.clone(),
            (None, Some(region)) => format!("https://{service}.{region}.amazonaws.com"),
            (None, None) => format!("https://{service}.<no region>.amazonaws.com"),
        }
    }

    /// The region and endpoint override the SDK resolved (what the run acts on).
    pub fn target(&self) -> (Option<String>, Option<String>) {
        (self.region.clone(), self.endpoint.clone())
    }

    /// Loads the SDK configuration (credential chain, region, endpoint, retries) and makes clients.
    pub async fn connect(settings: &AwsSettings) -> Self {
        let mut loader = aws_config::defaults(BehaviorVersion::latest());
        if let Some(region) = &settings.region {
            loader = loader.region(aws_config::Region::new(region.clone()));
        }
        if let Some(profile) = &settings.profile {
            loader = loader.profile_name(profile);
        }
        if let Some(endpoint) = &settings.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        if let Some(n) = settings.max_attempts {
            loader = loader.retry_config(RetryConfig::standard().with_max_attempts(n.max(1)));
        }
        let config = loader.load().await;
        AwsCloud {
            ec2: aws_sdk_ec2::Client::new(&config),
            ssm: aws_sdk_ssm::Client::new(&config),
            sts: aws_sdk_sts::Client::new(&config),
            elb: aws_sdk_elasticloadbalancingv2::Client::new(&config),
            cloudwatch: aws_sdk_cloudwatch::Client::new(&config),
            autoscaling: aws_sdk_autoscaling::Client::new(&config),
            region: config.region().map(|r| r.to_string()),
            endpoint: config.endpoint_url().map(str::to_string),
            request_ids: Mutex::new(Vec::new()),
            caller: Mutex::new(None),
        }
    }

    /// The caller ARN of the last `GetCallerIdentity`, if one answered.
    pub fn caller_arn(&self) -> Option<String> {
        self.caller.lock().ok().and_then(|c| c.clone())
    }

    pub fn take_request_ids(&self) -> Vec<String> {
        self.request_ids
            .lock()
            .map(|mut v| std::mem::take(&mut *v))
            .unwrap_or_default()
    }

    fn note<T: RequestId>(&self, out: &T) {
        if let (Some(id), Ok(mut ids)) = (out.request_id(), self.request_ids.lock()) {
            ids.push(id.to_string());
        }
    }

    /// The account the credentials resolve to: STS `GetCallerIdentity`, which needs no
    /// permission and answers for exactly the credentials the run will use (moto and LocalStack
    /// implement it). Its request id is not kept: it belongs to no binding call.
    pub async fn account_id(&self) -> CloudResult<String> {
        let out = self
            .sts
            .get_caller_identity()
            .send()
            .await
            .map_err(|e| self.sdk_error("GetCallerIdentity", e))?;
        if let (Some(arn), Ok(mut caller)) = (out.arn(), self.caller.lock()) {
            *caller = Some(arn.to_string());
        }
        out.account()
            .map(str::to_string)
            .ok_or_else(|| BindingError::new("UnknownAccount", "STS named no account"))
    }

    pub async fn describe_instances(&self, f: &Filter) -> CloudResult<Vec<Instance>> {
        let mut filters: Vec<ec2t::Filter> = f
            .tags
            .iter()
            .map(|(k, v)| {
                ec2t::Filter::builder()
                    .name(format!("tag:{k}"))
                    .values(v)
                    .build()
            })
            .collect();
        if !f.states.is_empty() {
            filters.push(
                ec2t::Filter::builder()
                    .name("instance-state-name")
                    .set_values(Some(f.states.clone()))
                    .build(),
            );
        }
        let mut pages = self
            .ec2
            .describe_instances()
            .set_instance_ids((!f.ids.is_empty()).then(|| f.ids.clone()))
            .set_filters((!filters.is_empty()).then_some(filters))
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.sdk_error("DescribeInstances", e))?;
            self.note(&page);
            for r in page.reservations() {
                out.extend(r.instances().iter().map(instance_of));
            }
        }
        Ok(out)
    }

    pub async fn instance_status(&self, ids: &[String]) -> CloudResult<Vec<InstanceStatus>> {
        let out = self
            .ec2
            .describe_instance_status()
            .set_instance_ids(Some(ids.to_vec()))
            .include_all_instances(true)
            .send()
            .await
            .map_err(|e| self.sdk_error("DescribeInstanceStatus", e))?;
        self.note(&out);
        Ok(out
            .instance_statuses()
            .iter()
            .map(|s| InstanceStatus {
                id: s.instance_id().unwrap_or_default().into(),
                state: s
                    .instance_state()
                    .and_then(|st| st.name())
                    .map(|n| n.as_str().to_string())
                    .unwrap_or_default(),
                system_status: s
                    .system_status()
                    .and_then(|x| x.status())
                    .map(|x| x.as_str().to_string())
                    .unwrap_or_else(|| "not-applicable".into()),
                instance_status: s
                    .instance_status()
                    .and_then(|x| x.status())
                    .map(|x| x.as_str().to_string())
                    .unwrap_or_else(|| "not-applicable".into()),
            })
            .collect())
    }

    pub async fn create_tags(&self, ids: &[String], tags: &Tags) -> CloudResult<()> {
        let out = self
            .ec2
            .create_tags()
            .set_resources(Some(ids.to_vec()))
            .set_tags(Some(tag_list(tags)))
            .send()
            .await
            .map_err(|e| self.sdk_error("CreateTags", e))?;
        self.note(&out);
        Ok(())
    }

    pub async fn delete_tags(&self, ids: &[String], keys: &[String]) -> CloudResult<()> {
        let tags = keys
            .iter()
            .map(|k| ec2t::Tag::builder().key(k).build())
            .collect();
        let out = self
            .ec2
            .delete_tags()
            .set_resources(Some(ids.to_vec()))
            .set_tags(Some(tags))
            .send()
            .await
            .map_err(|e| self.sdk_error("DeleteTags", e))?;
        self.note(&out);
        Ok(())
    }

    pub async fn find_security_group(&self, vpc: &str, name: &str) -> CloudResult<Option<String>> {
        let out = self
            .ec2
            .describe_security_groups()
            .filters(ec2t::Filter::builder().name("vpc-id").values(vpc).build())
            .filters(
                ec2t::Filter::builder()
                    .name("group-name")
                    .values(name)
                    .build(),
            )
            .send()
            .await
            .map_err(|e| self.sdk_error("DescribeSecurityGroups", e))?;
        self.note(&out);
        Ok(out
            .security_groups()
            .iter()
            .find_map(|g| g.group_id().map(str::to_string)))
    }

    pub async fn create_closed_security_group(
        &self,
        vpc: &str,
        name: &str,
        description: &str,
        tags: &Tags,
    ) -> CloudResult<String> {
        let out = self
            .ec2
            .create_security_group()
            .group_name(name)
            .description(description)
            .vpc_id(vpc)
            .set_tag_specifications(
                tag_spec(ec2t::ResourceType::SecurityGroup, tags).map(|t| vec![t]),
            )
            .send()
            .await
            .map_err(|e| self.sdk_error("CreateSecurityGroup", e))?;
        self.note(&out);
        let id = out
            .group_id()
            .ok_or_else(|| {
                BindingError::new("MissingGroupId", "CreateSecurityGroup returned no group id")
            })?
            .to_string();
        // A new group allows all outbound traffic; a quarantine must not.
        let everything = ec2t::IpPermission::builder()
            .ip_protocol("-1")
            .ip_ranges(ec2t::IpRange::builder().cidr_ip("0.0.0.0/0").build())
            .build();
        let out = self
            .ec2
            .revoke_security_group_egress()
            .group_id(&id)
            .ip_permissions(everything)
            .send()
            .await
            .map_err(|e| self.sdk_error("RevokeSecurityGroupEgress", e))?;
        self.note(&out);
        Ok(id)
    }

    pub async fn set_eni_groups(&self, eni: &str, groups: &[String]) -> CloudResult<()> {
        let out = self
            .ec2
            .modify_network_interface_attribute()
            .network_interface_id(eni)
            .set_groups(Some(groups.to_vec()))
            .send()
            .await
            .map_err(|e| self.sdk_error("ModifyNetworkInterfaceAttribute", e))?;
        self.note(&out);
        Ok(())
    }

    pub async fn create_snapshot(
        &self,
        volume: &str,
        description: &str,
        tags: &Tags,
    ) -> CloudResult<Snapshot> {
        let out = self
            .ec2
            .create_snapshot()
            .volume_id(volume)
            .description(description)
            .set_tag_specifications(tag_spec(ec2t::ResourceType::Snapshot, tags).map(|t| vec![t]))
            .send()
            .await
            .map_err(|e| self.sdk_error("CreateSnapshot", e))?;
        self.note(&out);
        Ok(Snapshot {
            id: out.snapshot_id().unwrap_or_default().into(),
            volume: volume.into(),
            state: out
                .state()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
            tags: tags_of(out.tags()),
            start_time: time_of(out.start_time()),
        })
    }

    pub async fn describe_snapshots(&self, ids: &[String]) -> CloudResult<Vec<Snapshot>> {
        let out = self
            .ec2
            .describe_snapshots()
            .set_snapshot_ids(Some(ids.to_vec()))
            .send()
            .await
            .map_err(|e| self.sdk_error("DescribeSnapshots", e))?;
        self.note(&out);
        Ok(out.snapshots().iter().map(snapshot_of).collect())
    }

    pub async fn change_state(
        &self,
        ids: &[String],
        action: StateAction,
    ) -> CloudResult<Vec<StateChange>> {
        let ids_vec = Some(ids.to_vec());
        let changes: Vec<ec2t::InstanceStateChange> = match action {
            StateAction::Stop { force } => {
                let out = self
                    .ec2
                    .stop_instances()
                    .set_instance_ids(ids_vec)
                    .force(force)
                    .send()
                    .await
                    .map_err(|e| self.sdk_error("StopInstances", e))?;
                self.note(&out);
                out.stopping_instances().to_vec()
            }
            StateAction::Start => {
                let out = self
                    .ec2
                    .start_instances()
                    .set_instance_ids(ids_vec)
                    .send()
                    .await
                    .map_err(|e| self.sdk_error("StartInstances", e))?;
                self.note(&out);
                out.starting_instances().to_vec()
            }
            StateAction::Terminate => {
                let out = self
                    .ec2
                    .terminate_instances()
                    .set_instance_ids(ids_vec)
                    .send()
                    .await
                    .map_err(|e| self.sdk_error("TerminateInstances", e))?;
                self.note(&out);
                out.terminating_instances().to_vec()
            }
            StateAction::Reboot => {
                let out = self
                    .ec2
                    .reboot_instances()
                    .set_instance_ids(ids_vec)
                    .send()
                    .await
                    .map_err(|e| self.sdk_error("RebootInstances", e))?;
                self.note(&out);
                // RebootInstances answers with nothing; the instances stay running.
                return Ok(ids
                    .iter()
                    .map(|id| StateChange {
                        id: id.clone(),
                        previous_state: "running".into(),
                        state: "running".into(),
                    })
                    .collect());
            }
        };
        let name = |s: Option<&ec2t::InstanceState>| {
            s.and_then(|s| s.name())
                .map(|n| n.as_str().to_string())
                .unwrap_or_default()
        };
        Ok(changes
            .iter()
            .map(|c| StateChange {
                id: c.instance_id().unwrap_or_default().into(),
                previous_state: name(c.previous_state()),
                state: name(c.current_state()),
            })
            .collect())
    }

    pub async fn create_image(
        &self,
        instance: &str,
        name: &str,
        no_reboot: bool,
        tags: &Tags,
    ) -> CloudResult<String> {
        let out = self
            .ec2
            .create_image()
            .instance_id(instance)
            .name(name)
            .no_reboot(no_reboot)
            .set_tag_specifications(tag_spec(ec2t::ResourceType::Image, tags).map(|t| vec![t]))
            .send()
            .await
            .map_err(|e| self.sdk_error("CreateImage", e))?;
        self.note(&out);
        out.image_id()
            .map(str::to_string)
            .ok_or_else(|| BindingError::new("MissingImageId", "CreateImage returned no image id"))
    }

    pub async fn run_instances(&self, spec: &LaunchSpec) -> CloudResult<Vec<Instance>> {
        let count = spec.count.max(1);
        let out = self
            .ec2
            .run_instances()
            .set_image_id(spec.image.clone())
            .set_launch_template(spec.launch_template.as_ref().map(|name| {
                ec2t::LaunchTemplateSpecification::builder()
                    .launch_template_name(name)
                    .build()
            }))
            .set_instance_type(spec.instance_type.as_deref().map(ec2t::InstanceType::from))
            .set_subnet_id(spec.subnet.clone())
            .set_security_group_ids(
                (!spec.security_groups.is_empty()).then(|| spec.security_groups.clone()),
            )
            .set_tag_specifications(
                tag_spec(ec2t::ResourceType::Instance, &spec.tags).map(|t| vec![t]),
            )
            .min_count(count)
            .max_count(count)
            .send()
            .await
            .map_err(|e| self.sdk_error("RunInstances", e))?;
        self.note(&out);
        Ok(out.instances().iter().map(instance_of).collect())
    }

    pub async fn send_command(&self, req: &CommandRequest) -> CloudResult<String> {
        let parameters: HashMap<String, Vec<String>> = req.parameters.clone().into_iter().collect();
        let out = self
            .ssm
            .send_command()
            .set_instance_ids(Some(req.instances.clone()))
            .document_name(&req.document)
            .set_parameters(Some(parameters))
            .max_concurrency(&req.max_concurrency)
            .max_errors(&req.max_errors)
            .timeout_seconds(req.timeout_seconds)
            .comment(&req.comment)
            .send()
            .await
            .map_err(|e| self.sdk_error("SendCommand", e))?;
        self.note(&out);
        out.command()
            .and_then(|c| c.command_id())
            .map(str::to_string)
            .ok_or_else(|| {
                BindingError::new("MissingCommandId", "SendCommand returned no command id")
            })
    }

    /// One instance's invocation. (`ListCommandInvocations` would fetch all at once, but moto does
    /// not implement it; one call per instance works on both and is fanned out concurrently.)
    pub async fn command_invocation(
        &self,
        command_id: &str,
        instance: &str,
    ) -> CloudResult<Invocation> {
        let out = self
            .ssm
            .get_command_invocation()
            .command_id(command_id)
            .instance_id(instance)
            .send()
            .await
            .map_err(|e| self.sdk_error("GetCommandInvocation", e))?;
        self.note(&out);
        Ok(Invocation {
            instance: instance.into(),
            status: out
                .status()
                .map(|s| s.as_str().to_string())
                .unwrap_or_default(),
            exit_code: i64::from(out.response_code()),
            stdout: out.standard_output_content().unwrap_or_default().into(),
            stderr: out.standard_error_content().unwrap_or_default().into(),
        })
    }

    /// Patch Manager's compliance of each instance. AWS answers at most 50 ids a request.
    pub async fn patch_states(&self, ids: &[String]) -> CloudResult<Vec<PatchState>> {
        let mut out = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(50) {
            let mut next: Option<String> = None;
            loop {
                let page = self
                    .ssm
                    .describe_instance_patch_states()
                    .set_instance_ids(Some(chunk.to_vec()))
                    .set_next_token(next.take())
                    .send()
                    .await
                    .map_err(|e| self.sdk_error("DescribeInstancePatchStates", e))?;
                self.note(&page);
                for st in page.instance_patch_states() {
                    out.push(PatchState {
                        id: st.instance_id().to_string(),
                        operation: st.operation().as_str().to_string(),
                        installed: i64::from(st.installed_count()),
                        installed_pending_reboot: i64::from(
                            st.installed_pending_reboot_count().unwrap_or(0),
                        ),
                        missing: i64::from(st.missing_count()),
                        failed: i64::from(st.failed_count()),
                        critical_non_compliant: i64::from(
                            st.critical_non_compliant_count().unwrap_or(0),
                        ),
                        operation_end: st.operation_end_time().to_string(),
                    });
                }
                match page.next_token() {
                    Some(t) if !t.is_empty() => next = Some(t.to_string()),
                    _ => break,
                }
            }
        }
        Ok(out)
    }

    pub async fn get_parameter(&self, name: &str, decrypt: bool) -> CloudResult<String> {
        let out = self
            .ssm
            .get_parameter()
            .name(name)
            .with_decryption(decrypt)
            .send()
            .await
            .map_err(|e| self.sdk_error("GetParameter", e))?;
        self.note(&out);
        out.parameter()
            .and_then(|p| p.value())
            .map(str::to_string)
            .ok_or_else(|| {
                BindingError::new(
                    "ParameterNotFound",
                    format!("parameter {name} has no value"),
                )
            })
    }

    pub async fn put_parameter(
        &self,
        name: &str,
        value: &str,
        kind: &str,
        overwrite: bool,
    ) -> CloudResult<i64> {
        let out = self
            .ssm
            .put_parameter()
            .name(name)
            .value(value)
            .r#type(aws_sdk_ssm::types::ParameterType::from(kind))
            .overwrite(overwrite)
            .send()
            .await
            .map_err(|e| self.sdk_error("PutParameter", e))?;
        self.note(&out);
        Ok(out.version())
    }
}

// --- EBS volumes restored from backups (the monthly backup restoration test). ---

fn volume_of(v: &ec2t::Volume) -> Volume {
    let attached = v.attachments().first();
    Volume {
        id: v.volume_id().unwrap_or_default().into(),
        state: v
            .state()
            .map(|x| x.as_str().to_string())
            .unwrap_or_default(),
        snapshot: v.snapshot_id().unwrap_or_default().into(),
        zone: v.availability_zone().unwrap_or_default().into(),
        instance: attached
            .and_then(|a| a.instance_id())
            .unwrap_or_default()
            .into(),
        device: attached.and_then(|a| a.device()).unwrap_or_default().into(),
        attachment: attached
            .and_then(|a| a.state())
            .map(|x| x.as_str().to_string())
            .unwrap_or_default(),
        tags: tags_of(v.tags()),
    }
}

impl AwsCloud {
    /// The account's own snapshots (`OwnerIds=self`: without it AWS lists every public
    /// snapshot too), filtered on the server.
    pub async fn find_snapshots(&self, f: &SnapshotFilter) -> CloudResult<Vec<Snapshot>> {
        let mut filters: Vec<ec2t::Filter> = f
            .tags
            .iter()
            .map(|(k, v)| {
                ec2t::Filter::builder()
                    .name(format!("tag:{k}"))
                    .values(v)
                    .build()
            })
            .collect();
        if let Some(volume) = &f.volume {
            filters.push(
                ec2t::Filter::builder()
                    .name("volume-id")
                    .values(volume)
                    .build(),
            );
        }
        if !f.states.is_empty() {
            filters.push(
                ec2t::Filter::builder()
                    .name("status")
                    .set_values(Some(f.states.clone()))
                    .build(),
            );
        }
        let mut pages = self
            .ec2
            .describe_snapshots()
            .owner_ids("self")
            .set_filters((!filters.is_empty()).then_some(filters))
            .into_paginator()
            .send();
        let mut out = Vec::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.sdk_error("DescribeSnapshots", e))?;
            self.note(&page);
            out.extend(page.snapshots().iter().map(snapshot_of));
        }
        Ok(out)
    }

    pub async fn instance_zone(&self, instance: &str) -> CloudResult<String> {
        let out = self
            .ec2
            .describe_instances()
            .instance_ids(instance)
            .send()
            .await
            .map_err(|e| self.sdk_error("DescribeInstances", e))?;
        self.note(&out);
        out.reservations()
            .iter()
            .flat_map(|r| r.instances())
            .find_map(|i| i.placement().and_then(|p| p.availability_zone()))
            .map(str::to_string)
            .ok_or_else(|| {
                BindingError::new(
                    "InvalidInstanceID.NotFound",
                    format!("The instance ID '{instance}' does not exist"),
                )
            })
    }

    pub async fn create_volume(
        &self,
        snapshot: &str,
        zone: &str,
        tags: &Tags,
    ) -> CloudResult<Volume> {
        let out = self
            .ec2
            .create_volume()
            .snapshot_id(snapshot)
            .availability_zone(zone)
            .set_tag_specifications(tag_spec(ec2t::ResourceType::Volume, tags).map(|t| vec![t]))
            .send()
            .await
            .map_err(|e| self.sdk_error("CreateVolume", e))?;
        self.note(&out);
        Ok(Volume {
            id: out.volume_id().unwrap_or_default().into(),
            state: out
                .state()
                .map(|x| x.as_str().to_string())
                .unwrap_or_default(),
            snapshot: out.snapshot_id().unwrap_or_default().into(),
            zone: out.availability_zone().unwrap_or_default().into(),
            instance: String::new(),
            device: String::new(),
            attachment: String::new(),
            tags: tags_of(out.tags()),
        })
    }

    pub async fn describe_volumes(&self, ids: &[String]) -> CloudResult<Vec<Volume>> {
        let out = self
            .ec2
            .describe_volumes()
            .set_volume_ids(Some(ids.to_vec()))
            .send()
            .await
            .map_err(|e| self.sdk_error("DescribeVolumes", e))?;
        self.note(&out);
        Ok(out.volumes().iter().map(volume_of).collect())
    }

    pub async fn attach_volume(
        &self,
        volume: &str,
        instance: &str,
        device: &str,
    ) -> CloudResult<()> {
        let out = self
            .ec2
            .attach_volume()
            .volume_id(volume)
            .instance_id(instance)
            .device(device)
            .send()
            .await
            .map_err(|e| self.sdk_error("AttachVolume", e))?;
        self.note(&out);
        Ok(())
    }

    pub async fn detach_volume(
        &self,
        volume: &str,
        instance: &str,
        device: &str,
        force: bool,
    ) -> CloudResult<()> {
        let out = self
            .ec2
            .detach_volume()
            .volume_id(volume)
            .instance_id(instance)
            .device(device)
            .force(force)
            .send()
            .await
            .map_err(|e| self.sdk_error("DetachVolume", e))?;
        self.note(&out);
        Ok(())
    }

    pub async fn delete_volume(&self, volume: &str) -> CloudResult<()> {
        let out = self
            .ec2
            .delete_volume()
            .volume_id(volume)
            .send()
            .await
            .map_err(|e| self.sdk_error("DeleteVolume", e))?;
        self.note(&out);
        Ok(())
    }
}
