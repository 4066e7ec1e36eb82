//! A real AWS emulator for the tests: moto's server on a free loopback port, one per test, killed
//! on drop, plus a seeded fleet that mirrors part of `sim/default-fleet.toml`.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use aws_sdk_ec2::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_ec2::types as t;

use super::Workspace;

/// moto's server (what `moto_server` runs), with one lock around every request. DynamoDB and S3
/// apply a conditional write atomically; moto's server is threaded and its models take no lock,
/// so two concurrent conditional puts can both pass the condition (seen: two replicas both
/// passing the same alert's dedupe put). Serialising requests restores what AWS guarantees;
/// connections are still accepted on threads, so an idle keep-alive connection blocks no one.
const SERIALISED_MOTO: &str = include_str!("serialised_moto.py");

pub struct Moto {
    child: Child,
    pub port: u16,
}

impl Moto {
    pub fn start() -> Moto {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free loopback port");
        let child = Command::new("python3")
            .args(["-c", SERIALISED_MOTO, &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 with moto's server must be installed for these tests: pip install 'moto[server]>=5.2.3' (.ci/run does)");
        let moto = Moto { child, port };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !moto.answers() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not answer on port {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        moto
    }

    fn answers(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let req = format!(
            "GET /moto-api/ HTTP/1.0\r\nHost: 127.0.0.1:{}\r\n\r\n",
            self.port
        );
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut head = [0u8; 12];
        s.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.") && &head[9..12] == b"200"
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// A workspace with runbook.toml environments `moto` (this server) and `drill` (the sim).
    pub fn workspace(&self, account: &str) -> Workspace {
        let ws = Workspace::new();
        ws.write(
            "runbook.toml",
            &format!(
                "[environments.moto]\nbackend = \"aws\"\nregion = \"us-east-1\"\nendpoint = \"{}\"\naccount_id = \"{account}\"\nmax_attempts = 2\n\n[environments.drill]\nbackend = \"sim\"\n",
                self.endpoint()
            ),
        );
        ws
    }

    pub fn ec2(&self) -> aws_sdk_ec2::Client {
        let config = aws_sdk_ec2::config::Builder::new()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(self.endpoint())
            .credentials_provider(Credentials::new("testing", "testing", None, None, "tests"))
            .build();
        aws_sdk_ec2::Client::from_conf(config)
    }

    /// An S3 client on this server (buckets in the path), to look at what was archived.
    pub fn s3(&self) -> aws_sdk_s3::Client {
        let config = aws_sdk_s3::config::Builder::new()
            .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
            .region(aws_sdk_s3::config::Region::new("us-east-1"))
            .endpoint_url(self.endpoint())
            .force_path_style(true)
            .credentials_provider(aws_sdk_s3::config::Credentials::new(
                "testing", "testing", None, None, "tests",
            ))
            .build();
        aws_sdk_s3::Client::from_conf(config)
    }

    pub fn ssm(&self) -> aws_sdk_ssm::Client {
        let config = aws_sdk_ssm::config::Builder::new()
            .behavior_version(aws_sdk_ssm::config::BehaviorVersion::latest())
            .region(aws_sdk_ssm::config::Region::new("us-east-1"))
            .endpoint_url(self.endpoint())
            .credentials_provider(aws_sdk_ssm::config::Credentials::new(
                "testing", "testing", None, None, "tests",
            ))
            .build();
        aws_sdk_ssm::Client::from_conf(config)
    }

    pub fn dynamodb(&self) -> aws_sdk_dynamodb::Client {
        let config = aws_sdk_dynamodb::config::Builder::new()
            .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
            .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
            .endpoint_url(self.endpoint())
            .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
                "testing", "testing", None, None, "tests",
            ))
            .build();
        aws_sdk_dynamodb::Client::from_conf(config)
    }

    pub fn elb(&self) -> aws_sdk_elasticloadbalancingv2::Client {
        use aws_sdk_elasticloadbalancingv2::config as c;
        let config = c::Builder::new()
            .behavior_version(c::BehaviorVersion::latest())
            .region(c::Region::new("us-east-1"))
            .endpoint_url(self.endpoint())
            .credentials_provider(c::Credentials::new(
                "testing", "testing", None, None, "tests",
            ))
            .build();
        aws_sdk_elasticloadbalancingv2::Client::from_conf(config)
    }

    /// A CloudWatch client on this server, to seed metrics and alarms and read them back.
    pub fn cloudwatch(&self) -> aws_sdk_cloudwatch::Client {
        use aws_sdk_cloudwatch::config as c;
        let config = c::Builder::new()
            .behavior_version(c::BehaviorVersion::latest())
            .region(c::Region::new("us-east-1"))
            .endpoint_url(self.endpoint())
            .credentials_provider(c::Credentials::new(
                "testing", "testing", None, None, "tests",
            ))
            .build();
        aws_sdk_cloudwatch::Client::from_conf(config)
    }

    pub fn autoscaling(&self) -> aws_sdk_autoscaling::Client {
        use aws_sdk_autoscaling::config as c;
        let config = c::Builder::new()
            .behavior_version(c::BehaviorVersion::latest())
            .region(c::Region::new("us-east-1"))
            .endpoint_url(self.endpoint())
            .credentials_provider(c::Credentials::new(
                "testing", "testing", None, None, "tests",
            ))
            .build();
        aws_sdk_autoscaling::Client::from_conf(config)
    }

    /// Seeds a VPC with the API's security group, `api-blue-1` (two volumes, like the sim fleet)
    /// and `worker-1`. Returns (api-blue-1 id, worker-1 id).
    pub fn seed(&self) -> (String, String) {
        block(async {
            let ec2 = self.ec2();
            let vpc = ec2
                .create_vpc()
                .cidr_block("10.0.0.0/16")
                .send()
                .await
                .unwrap();
            let vpc = vpc.vpc().unwrap().vpc_id().unwrap().to_string();
            let subnet = ec2
                .create_subnet()
                .vpc_id(&vpc)
                .cidr_block("10.0.1.0/24")
                .send()
                .await
                .unwrap();
            let subnet = subnet.subnet().unwrap().subnet_id().unwrap().to_string();
            let sg = ec2
                .create_security_group()
                .group_name("ec2-manager-api")
                .description("api")
                .vpc_id(&vpc)
                .send()
                .await
                .unwrap();
            let sg = sg.group_id().unwrap().to_string();
            let launch = |name: &'static str, volumes: usize| {
                let mut req = ec2
                    .run_instances()
                    .image_id("ami-0a1b2c3d4e5f60001")
                    .instance_type(t::InstanceType::T3Large)
                    .subnet_id(&subnet)
                    .security_group_ids(&sg)
                    .min_count(1)
                    .max_count(1)
                    .tag_specifications(
                        t::TagSpecification::builder()
                            .resource_type(t::ResourceType::Instance)
                            .tags(t::Tag::builder().key("Name").value(name).build())
                            .tags(
                                t::Tag::builder()
                                    .key("Service")
                                    .value("ec2-manager-api")
                                    .build(),
                            )
                            .build(),
                    );
                for (k, dev) in ["/dev/sda1", "/dev/sdb"].iter().take(volumes).enumerate() {
                    req = req.block_device_mappings(
                        t::BlockDeviceMapping::builder()
                            .device_name(*dev)
                            .ebs(
                                t::EbsBlockDevice::builder()
                                    .volume_size(8 + k as i32)
                                    .build(),
                            )
                            .build(),
                    );
                }
                req.send()
            };
            let blue = launch("api-blue-1", 2).await.unwrap();
            let worker = launch("worker-1", 1).await.unwrap();
            (
                blue.instances()[0].instance_id().unwrap().to_string(),
                worker.instances()[0].instance_id().unwrap().to_string(),
            )
        })
    }
}

impl Moto {
    /// An Auto Scaling group `name` (1 to 4 instances, 1 desired) launching from a launch
    /// template of the same name into the subnet of `like` (an instance of [`Moto::seed`]).
    pub fn scaling_group(&self, name: &str, like: &str) {
        block(async {
            let out = self
                .ec2()
                .describe_instances()
                .instance_ids(like)
                .send()
                .await
                .unwrap();
            let subnet = out.reservations()[0].instances()[0]
                .subnet_id()
                .unwrap()
                .to_string();
            self.ec2()
                .create_launch_template()
                .launch_template_name(name)
                .launch_template_data(
                    t::RequestLaunchTemplateData::builder()
                        .image_id("ami-0a1b2c3d4e5f60003")
                        .instance_type(t::InstanceType::T3Micro)
                        .build(),
                )
                .send()
                .await
                .unwrap();
            self.autoscaling()
                .create_auto_scaling_group()
                .auto_scaling_group_name(name)
                .launch_template(
                    aws_sdk_autoscaling::types::LaunchTemplateSpecification::builder()
                        .launch_template_name(name)
                        .version("$Latest")
                        .build(),
                )
                .min_size(1)
                .max_size(4)
                .desired_capacity(1)
                .vpc_zone_identifier(&subnet)
                .send()
                .await
                .unwrap();
        })
    }

    /// Stops the server's process (SIGSTOP) until the guard is dropped (SIGCONT): it keeps
    /// its connections and answers nothing, as a backend does that has stopped answering.
    pub fn pause(&self) -> Paused<'_> {
        signal(self.child.id(), "-STOP");
        Paused(self)
    }
}

pub struct Paused<'a>(&'a Moto);

impl Drop for Paused<'_> {
    fn drop(&mut self) {
        signal(self.0.child.id(), "-CONT");
    }
}

fn signal(pid: u32, which: &str) {
    let status = Command::new("kill")
        .args([which, &pid.to_string()])
        .status()
        .expect("kill");
    assert!(status.success(), "kill {which} {pid}");
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn block<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

/// Credentials for the emulator; everything else AWS_* was stripped by the builder.
pub fn with_credentials(cmd: super::Cmd) -> super::Cmd {
    cmd.env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
}

/// `runbook run ec2-compromised-instance` on `instance` in environment `env`, with the
/// emulator's credentials, confirmed in advance, its transcript at `transcript`.
pub fn compromised(ws: &Workspace, env: &str, instance: &str, transcript: &str) -> super::Run {
    let runbooks = concat!(env!("CARGO_MANIFEST_DIR"), "/runbooks");
    let id = format!("instance_id={instance}");
    with_credentials(ws.cmd())
        .args(&[
            "run",
            "ec2-compromised-instance",
            "--runbooks",
            runbooks,
            "--env",
            env,
            "--yes",
            "--param",
            &id,
            "--param",
            "incident=2026-1123-004",
            "--transcript",
            transcript,
        ])
        .output()
}
