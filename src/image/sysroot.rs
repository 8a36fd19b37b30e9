//! A staging sysroot in a plain directory: what `ostree admin` builds on a
//! host's disk, built here without loop devices or mounts.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::util::cmd::Cmd;

pub struct Staged {
    pub root: PathBuf,
    /// The deployment directory (`ostree/deploy/OS/deploy/CHECKSUM.0`).
    pub deployment: PathBuf,
    pub commit: String,
}

fn ostree_repo(sysroot: &Path) -> String {
    format!("--repo={}", sysroot.join("ostree/repo").display())
}

/// `ostree remote add` (replacing one of the same name): with a keyring
/// the remote verifies GPG signatures against it, without one it does not.
pub fn remote_add(
    repo: &Path,
    name: &str,
    url: &str,
    branch: Option<&str>,
    gpg_keyring: Option<&Path>,
) -> Result<()> {
    let mut add = Cmd::new("ostree")
        .arg(format!("--repo={}", repo.display()))
        .args(["remote", "add", "--force"]);
    add = match gpg_keyring {
        // The summary too: a node must not follow refs nobody signed.
        Some(k) => add
            .arg("--set=gpg-verify=true")
            .arg("--set=gpg-verify-summary=true")
            .arg(format!("--gpg-import={}", k.display())),
        None => add.arg("--no-gpg-verify"),
    };
    add.args([name, url]).args(branch).run()?;
    Ok(())
}

/// Pull `commit` into the new (bare) repo. By checksum with no local ref,
/// so libostree 2022.7 takes the remote's from-empty static delta if it has
/// one; metadata first, or 2022.7 fetches every object again after the
/// delta (ostreedev/ostree#2053).
fn pull_remote(repo: &str, remote: &str, commit: &str, url: &str) -> Result<String> {
    let ctx = || format!("pulling {commit} from {url}");
    Cmd::new("ostree")
        .args([repo, "pull", "--commit-metadata-only", remote, commit])
        .run()
        .with_context(ctx)?;
    let out = Cmd::new("ostree")
        .args([repo, "pull", "--disable-fsync", remote, commit])
        .run()
        .with_context(ctx)?;
    // ostree's last line: "N delta parts, M loose fetched; X KiB transferred in S seconds".
    let last = out
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    tracing::info!("pulled {commit} from {url}: {last}");
    Ok(out)
}

/// The commit from a local repo into the staging repo: an archive repo's
/// objects inflated on every CPU ([`super::import`]), any other kind by
/// `ostree pull-local`.
fn pull_local(root: &Path, repo: &str, source: &Path, plan: &super::disk::Plan) -> Result<()> {
    if super::import::can_import(source)? {
        let threads = crate::util::threads(None);
        return crate::util::progress::step("importing the commit", || {
            super::import::import(source, &root.join("ostree/repo"), &plan.commit, threads)
        })
        .context("importing the commit into the image");
    }
    Cmd::new("ostree")
        // ostree admin deploy syncs the filesystem afterwards: no fsync
        // per object (on a staging directory, none is needed)
        .args([repo, "pull-local", "--disable-fsync"])
        .arg(format!("--remote={}", plan.remote))
        .arg(source)
        .arg(&plan.commit)
        .run()
        .context("pulling the commit into the image")?;
    Ok(())
}

/// init-fs, os-init, the update remote, the commit pulled with the origin
/// set to `REMOTE:REF`, and a deploy whose menu comes from keelson's
/// generator.
pub fn stage(root: &Path, plan: &super::disk::Plan, grub_mkconfig: &Path) -> Result<Staged> {
    let repo = ostree_repo(root);
    let sr = format!("--sysroot={}", root.display());
    let (osname, remote, commit) = (&plan.osname, &plan.remote, &plan.commit);
    Cmd::new("ostree")
        .args(["admin", "init-fs"])
        .arg(root)
        .run()?;
    Cmd::new("ostree")
        .args(["admin", "os-init", &sr, osname])
        .run()?;
    // Without an explicit backend, libostree finds no bootloader on a fresh
    // /boot and writes no menu.
    Cmd::new("ostree")
        .args([&repo, "config", "set", "sysroot.bootloader", "grub2"])
        .run()?;
    // With a keyring the node refuses commits not signed by one of its keys.
    remote_add(
        &root.join("ostree/repo"),
        remote,
        &plan.pull_url,
        Some(&plan.ref_),
        plan.keyring.as_deref(),
    )
    .context("adding the node's update remote")?;
    match &plan.source {
        super::disk::Source::Local(source_repo) => pull_local(root, &repo, source_repo, plan)?,
        super::disk::Source::Remote => {
            pull_remote(&repo, remote, commit, &plan.pull_url)?;
        }
    };
    let origin = format!("{remote}:{}", plan.ref_);
    Cmd::new("ostree")
        .args([&repo, "refs", &format!("--create={origin}"), commit])
        .run()?;
    let mut deploy = Cmd::new("ostree")
        .args(["admin", "deploy", &sr, &format!("--os={osname}")])
        // ostree chroots into the deployment to run grub-mkconfig unless the
        // program is something else: keelson's generator needs no chroot.
        .env("OSTREE_GRUB2_EXEC", grub_mkconfig.as_os_str());
    for k in plan.kargs() {
        deploy = deploy.arg(format!("--karg={k}"));
    }
    deploy.arg(&origin).run().context("ostree admin deploy")?;
    // The node mounts /sysroot read-only; only ostree writes to it.
    Cmd::new("ostree")
        .args([&repo, "config", "set", "sysroot.readonly", "true"])
        .run()?;
    let deployment = root.join(format!("ostree/deploy/{osname}/deploy/{commit}.0"));
    if !deployment.is_dir() {
        anyhow::bail!(
            "{}: deployment missing after ostree admin deploy",
            deployment.display()
        );
    }
    Ok(Staged {
        root: root.to_path_buf(),
        deployment,
        commit: commit.to_string(),
    })
}

/// ostree runs `OSTREE_GRUB2_EXEC -o …/grub.cfg`: a link named
/// grub-mkconfig to this binary runs keelson's menu generator. Made in
/// `work`; returns its path.
pub fn mkconfig_link(work: &Path) -> Result<PathBuf> {
    let bin = work.join("bin");
    fs_err::create_dir_all(&bin).with_context(|| format!("{}: cannot create", bin.display()))?;
    let mkconfig = bin.join("grub-mkconfig");
    std::os::unix::fs::symlink(std::env::current_exe()?, &mkconfig)
        .context("linking grub-mkconfig to keelson")?;
    Ok(mkconfig)
}

/// After the deploy: the deployment's fstab mounting /boot by UUID, and an
/// empty grubenv for boot counting.
pub fn finish(staged: &Staged, boot_uuid: &str) -> Result<()> {
    let mut ctx = tera::Context::new();
    ctx.insert("boot_uuid", boot_uuid);
    let fstab = tera::Tera::one_off(super::FSTAB_TEMPLATE, &ctx, false)?;
    fs_err::write(staged.deployment.join("etc/fstab"), fstab)
        .context("writing the deployment's /etc/fstab")?;
    Cmd::new("grub-editenv")
        .arg(staged.root.join("boot/grubenv"))
        .arg("create")
        .run()?;
    Ok(())
}

/// The first-boot flag on /boot (GRUB adds Ignition's kernel arguments
/// while it exists) and, for installs, the config Ignition reads there.
pub fn firstboot(root: &Path, fb: &super::disk::FirstBoot, boot_uuid: &str) -> Result<()> {
    use crate::provision::ignition;
    use std::os::unix::fs::PermissionsExt;
    let boot = root.join("boot");
    if let Some(config) = &fb.config {
        let p = boot.join(ignition::EMBEDDED_CONFIG);
        let dir = p.parent().expect("has parent");
        fs_err::create_dir_all(dir)?;
        // It may hold password hashes: root only.
        fs_err::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        fs_err::write(&p, config).context("embedding the Ignition config on /boot")?;
        fs_err::set_permissions(&p, std::fs::Permissions::from_mode(0o600))?;
    }
    let flag = ignition::firstboot_flag(&fb.platform, boot_uuid)?;
    fs_err::write(boot.join(ignition::FIRSTBOOT_FLAG), flag)
        .context("writing the first-boot flag on /boot")
}

/// `ostree admin deploy` marks deployment roots immutable; clear that so
/// the staging directory can be removed.
pub fn release(root: &Path) {
    let deploy = root.join("ostree/deploy");
    let Ok(oses) = fs_err::read_dir(&deploy) else {
        return;
    };
    for os in oses.flatten() {
        let Ok(ds) = fs_err::read_dir(os.path().join("deploy")) else {
            continue;
        };
        for d in ds.flatten() {
            if d.path().is_dir() {
                let _ = Cmd::new("chattr").arg("-i").arg(d.path()).run();
            }
        }
    }
}
