#!/bin/sh
# One-time setup of the two object stores (compose service minio-init, MinIO client image).
# Idempotent: run on every `docker compose up`, it changes nothing the second time.
#
#   minio-cn (Shanghai source): bucket $CN_SOURCE_BUCKET; airflow-cn-source may only list
#            and read it (the China-side workers mirror partitions from it).
#   minio-us (U.S. landing):    bucket $US_LANDING_BUCKET; airflow-cn-exporter (China-side
#            workers: upload, manifest, receipts) and airflow-us-receiver (the U.S. worker)
#            may use that bucket only.
#
# Airflow never holds a root user. Credentials come from /run/secrets (docker/make_secrets.py);
# a service user's file holds its access key on line 1 and its secret key on line 2.
# Only POSIX sh and mc: the MinIO client image has no grep, sed or jq to rely on.
set -eu

SECRETS_DIR="${SECRETS_DIR:-/run/secrets}"
POLICIES="${TMPDIR:-/tmp}/minio-init-policies"
mkdir -p "$POLICIES"

secret() { cat "$SECRETS_DIR/$1"; }

# bucket_policy NAME BUCKET ACTIONS: a policy allowing ACTIONS (JSON list items) on BUCKET only.
bucket_policy() {
  cat > "$POLICIES/$1.json" <<EOF
{
  "Version": "2012-10-17",
  "Statement": [
    {
      "Effect": "Allow",
      "Action": [$3],
      "Resource": ["arn:aws:s3:::$2", "arn:aws:s3:::$2/*"]
    }
  ]
}
EOF
}

# service_user ALIAS SECRET_NAME POLICY: create (or update) the user and attach the policy.
service_user() {
  { IFS= read -r access_key; IFS= read -r secret_key; } < "$SECRETS_DIR/$2"
  mc admin user add "$1" "$access_key" "$secret_key" > /dev/null
  if ! mc admin policy attach "$1" "$3" --user "$access_key" > /dev/null 2>&1; then
    # MinIO refuses to attach a policy twice: fine only if it is attached already.
    case "$(mc admin user info "$1" "$access_key")" in
      *"$3"*) ;;
      *) echo "minio-init: could not attach policy $3 to $access_key on $1" >&2; exit 1 ;;
    esac
  fi
  echo "minio-init: $1 user $access_key has policy $3"
}

mc alias set cn "$CN_ENDPOINT" "$(secret minio_cn_root_user)" "$(secret minio_cn_root_password)" > /dev/null
mc alias set us "$US_ENDPOINT" "$(secret minio_us_root_user)" "$(secret minio_us_root_password)" > /dev/null

mc mb --ignore-existing --region "$CN_REGION" "cn/$CN_SOURCE_BUCKET"
mc mb --ignore-existing --region "$US_REGION" "us/$US_LANDING_BUCKET"

bucket_policy cn-source-read "$CN_SOURCE_BUCKET" '"s3:GetBucketLocation", "s3:ListBucket", "s3:GetObject"'
bucket_policy us-landing-readwrite "$US_LANDING_BUCKET" '"s3:*"'
mc admin policy create cn cn-source-read "$POLICIES/cn-source-read.json" > /dev/null
mc admin policy create us us-landing-readwrite "$POLICIES/us-landing-readwrite.json" > /dev/null

service_user cn minio_cn_source_reader cn-source-read
service_user us minio_us_cn_exporter us-landing-readwrite
service_user us minio_us_us_receiver us-landing-readwrite

rm -rf "$POLICIES"
echo "minio-init: done"
