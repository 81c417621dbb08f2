#!/usr/bin/env bash
# Make a UEFI boot disk for VirtualBox and Hyper-V from the guest image that
# `python -m vmimage build` made (QEMU boots those files directly instead).
#
#   packer/make-boot-disk.sh IMAGE_DIR OUT.raw
#
# Layout (GPT): partition 1 = EFI system partition holding one unified
# kernel image (systemd's EFI stub + vmlinuz + initramfs + command line) as
# EFI/BOOT/BOOTX64.EFI, so no boot loader is involved; partition 2 = the
# read-only root (rootfs.img, byte for byte). Needs no root: mtools writes
# the FAT file system, dd places both partitions.
# Tools: objcopy (binutils), systemd-boot-efi, dosfstools, mtools, fdisk.
set -euo pipefail
image_dir=$1
out=$2
stub=/usr/lib/systemd/boot/efi/linuxx64.efi.stub
cmdline="console=ttyS0 quiet loglevel=3 panic=-1 rw dockyard.root=/dev/sda2 dockyard.net=dhcp"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

printf '%s' "$cmdline" >"$work/cmdline"
objcopy \
  --add-section .cmdline="$work/cmdline" --change-section-vma .cmdline=0x30000 \
  --add-section .linux="$image_dir/vmlinuz" --change-section-vma .linux=0x2000000 \
  --add-section .initrd="$image_dir/initramfs.img" --change-section-vma .initrd=0x3000000 \
  "$stub" "$work/BOOTX64.EFI"

esp_mib=64
mkfs.vfat -C -F 32 -n DOCKYARDESP "$work/esp.img" $((esp_mib * 1024)) >/dev/null
mmd -i "$work/esp.img" ::/EFI ::/EFI/BOOT
mcopy -i "$work/esp.img" "$work/BOOTX64.EFI" ::/EFI/BOOT/BOOTX64.EFI

root_bytes=$(stat -c %s "$image_dir/rootfs.img")
root_mib=$(((root_bytes + 1048575) / 1048576))
total_mib=$((1 + esp_mib + root_mib + 1))
rm -f "$out"
truncate -s "${total_mib}M" "$out"
sfdisk --quiet "$out" <<PARTS
label: gpt
start=1MiB, size=${esp_mib}MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, name=esp
start=$((1 + esp_mib))MiB, size=${root_mib}MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, name=dockyard-root
PARTS
dd if="$work/esp.img" of="$out" bs=1M seek=1 conv=notrunc,sparse status=none
dd if="$image_dir/rootfs.img" of="$out" bs=1M seek=$((1 + esp_mib)) conv=notrunc,sparse status=none
echo "$out: ${total_mib} MiB boot disk (ESP + root)"
