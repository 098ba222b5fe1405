// Package s3 is the storage backend for Amazon S3 and S3-compatible object
// stores (MinIO, Ceph RGW, Backblaze B2's S3 endpoint, ...). Objects live in
// one bucket under an optional key prefix; Open checks once that the bucket is
// there and readable with the given credentials, so a wrong bucket name or key
// is one clear error at start-up rather than a failure at the first upload.
//
// # Library
//
// The backend is built on github.com/minio/minio-go/v7 rather than
// aws-sdk-go-v2, because:
//   - it is written for S3-compatible stores first: path-style and
//     virtual-host addressing, region discovery and signing quirks of MinIO,
//     Ceph and B2 work without per-vendor switches (aws-sdk-go-v2's default
//     request checksums broke several of these stores in 2025 and need opting
//     out);
//   - PutObject uploads an io.ReaderAt in parts read straight from the source
//     with io.SectionReader, so a multipart upload holds no part buffers and
//     memory stays bounded whatever the part size (the aws-sdk-go-v2 upload
//     manager buffers a part per concurrent upload unless the body also seeks);
//   - its dependency tree is a fraction of the SDK's, which matters in a
//     sidecar image that runs in every database pod. restic made the same
//     choice.
//
// The cost: credentials come from minio-go's providers, not the AWS SDK's.
// Without static keys the chain is, in order: AWS_ACCESS_KEY_ID /
// AWS_SECRET_ACCESS_KEY (/ AWS_SESSION_TOKEN) from the environment, the shared
// credentials file (~/.aws/credentials, AWS_SHARED_CREDENTIALS_FILE,
// AWS_PROFILE), then IAM: web identity (AWS_WEB_IDENTITY_TOKEN_FILE +
// AWS_ROLE_ARN, i.e. EKS IRSA), the ECS/EKS Pod Identity container endpoint
// (AWS_CONTAINER_CREDENTIALS_FULL_URI / _RELATIVE_URI) and the EC2 instance
// metadata service. Shared-file profiles may use credential_process or a
// token cached by `aws sso login`.
//
// # Versioning and conditional create
//
// In a versioned bucket Remove writes a delete marker (DeleteObject without a
// version id), so every version stays recoverable; Config.Purge deletes every
// version instead. The backend sets no Object Lock retention of its own (a
// bucket's default retention applies to what it writes). Create
// (storage.Creator) is a single PUT with If-None-Match: *.
//
// # Errors
//
// Errors are mapped onto the storage vocabulary: a missing key is
// storage.ErrNotFound naming the object; a missing bucket, denied access, an
// unknown access key or a wrong secret are storage.Permanent with a message
// saying what to fix; SlowDown and 429 carry the server's Retry-After through
// storage.WithRetryAfter; an unreachable endpoint is a transient error naming
// the endpoint. minio-go's own request retries are off by default so that
// retry policy lives in one place, package retry; wrap the backend with
// retry.New.
//
// This package must never import sidecar/repo, sidecar/archive, sidecar/agent
// or sidecar/pluginhost.
package s3
