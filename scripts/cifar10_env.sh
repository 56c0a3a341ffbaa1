# cifar10_env.sh: the settings the CIFAR-10 experiment scripts share (sourced by
# experiments_cifar10.sh and experiments_cifar10_families.sh, from the repository root). Each can
# be overridden from the environment.
KDLAB=${KDLAB:-build/kdlab}                                              # the kdlab binary
DATA=${DATA:-../shared/data/cifar10-jpg.tar.gz}                          # the CIFAR-10 images
TEACHER=${TEACHER:-../shared/teachers/cifar10_resnet56.safetensors}      # the resnet56 teacher
THREADS=${THREADS:-2}
