-- Tessera audit events in S3 (the forwarder's S3 sink): Athena table over the gzip NDJSON objects
-- s3://<bucket>/<prefix>tenant=<tenant>/date=YYYY-MM-DD/hour=HH/<first seq>-<last seq>.ndjson.gz
-- Replace <bucket>/<prefix>/ with the sink's bucket and prefix. Partition projection: no MSCK REPAIR
-- needed; query with a tenant and a date range, e.g.
--   SELECT "time", tessera.decision, tessera.tool, tessera.reason FROM tessera_audit
--   WHERE tenant = 'acme' AND "date" BETWEEN '2026-12-01' AND '2026-12-03' AND tessera.decision = 'deny';
-- Duplicates (at-least-once delivery, S3 keys make most resends overwrite) are removed by
-- tessera_chain.hash, e.g. SELECT DISTINCT or row_number() OVER (PARTITION BY tessera_chain.hash).
-- tests/unit/test_forward_query_packs.py checks these columns against events a test run produced.
CREATE EXTERNAL TABLE IF NOT EXISTS tessera_audit (
  `class_uid` int,
  `class_name` string,
  `category_uid` int,
  `category_name` string,
  `activity_id` int,
  `activity_name` string,
  `type_uid` bigint,
  `type_name` string,
  `time` bigint,
  `severity_id` int,
  `severity` string,
  `status_id` int,
  `status` string,
  `status_code` string,
  `status_detail` string,
  `message` string,
  `api` struct<operation:string,request:struct<uid:string>,response:struct<code:int,error:string,message:string>>,
  `actor` struct<user:struct<name:string,uid:string,type:string>>,
  `resources` array<struct<uid:string>>,
  `metadata` struct<version:string,uid:string,tenant_uid:string,product:struct<name:string,vendor_name:string,version:string>>,
  `tessera` struct<decision:string,check:string,code:int,reason:string,decision_id:string,tenant:string,agent:string,token_id:string,jti:string,tool:string,rpc_method:string,argument_keys:array<string>,argument_keys_truncated:boolean,arguments_sha256:string,prompt_sha256:string,policy_version:bigint,policy_hash:string,approval_id:string,latency_us:bigint,data:map<string,string>,intent:struct<determined:boolean,terms:array<string>>,actor:string,action:string,target:string,details:map<string,string>>,
  `tessera_chain` struct<tenant:string,seq:bigint,hash:string,prev_hash:string>
)
PARTITIONED BY (`tenant` string, `date` string, `hour` string)
ROW FORMAT SERDE 'org.openx.data.jsonserde.JsonSerDe'
WITH SERDEPROPERTIES ('ignore.malformed.json' = 'false')
LOCATION 's3://<bucket>/<prefix>'
TBLPROPERTIES (
  'projection.enabled' = 'true',
  'projection.tenant.type' = 'injected',
  'projection.date.type' = 'date',
  'projection.date.format' = 'yyyy-MM-dd',
  'projection.date.range' = '2024-01-01,NOW',
  'projection.hour.type' = 'integer',
  'projection.hour.range' = '0,23',
  'projection.hour.digits' = '2',
  'storage.location.template' = 's3://<bucket>/<prefix>tenant=${tenant}/date=${date}/hour=${hour}/'
);
